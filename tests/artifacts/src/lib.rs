//! Paths of the wasm plugins the tests load, built by this crate's
//! `build.rs` (a nested `cargo build --release --target wasm32-wasip2` into
//! `target/wasm-artifacts/`), like wasmtime's `test-programs-artifacts`.
//!
//! ```
//! let hello = std::fs::read(capstan_test_artifacts::HELLO).unwrap();
//! assert_eq!(&hello[..4], b"\0asm");
//! ```
//!
//! To add a plugin, add it to the `PLUGINS` list in `build.rs`.
//!
//! Also a throw-away PostgreSQL server for the run store's tests
//! ([`postgres`]).

#![deny(missing_docs)]

pub mod postgres;

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
