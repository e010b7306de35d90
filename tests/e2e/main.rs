//! End-to-end tests: the real `capstan` binary, real wasm plugins built by
//! `capstan-test-artifacts`, real programs.

mod adversarial;
mod audit;
mod golden_image;
mod harness;
mod pipeline_errors;
mod runs;
