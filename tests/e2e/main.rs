//! End-to-end tests: the real `capstan` binary, real wasm plugins built by
//! `capstan-test-artifacts`, real programs.

mod adversarial;
mod approvals;
mod audit;
mod command_stage;
mod conventions;
mod drift;
mod escapes;
mod github;
mod golden_image;
mod harness;
mod lost_host;
mod notify;
mod pipeline_errors;
mod plugin_cache;
mod recovery;
mod rollback;
mod run_ids;
mod runs;
mod sandbox;
mod secrets;
mod signed_approvals;
mod stopping;
mod store_faults;
mod triggers;
mod two_hosts;
mod verify;
