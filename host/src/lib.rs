//! Capstan: infrastructure delivery pipelines whose stages are WebAssembly
//! components, each confined to the capabilities its pipeline grants.
//!
//! The binary is thin (`main.rs`); everything lives here, one module per
//! concern: [`pipeline`] (file model and validation), [`runtime`] (engine,
//! cache, linker, limits), [`caps`] (capabilities and the host side of every
//! interface), [`run`] (scheduler and run directory), [`commands`] (one file
//! per subcommand), [`text`] (plugin text made safe for a terminal), [`term`]
//! (terminals, colour, tables, results on stdout).

pub mod bindings;
pub mod caps;
pub mod commands;
pub mod exit;
pub mod fault;
pub mod pipeline;
pub mod run;
pub mod runtime;
pub mod stats;
pub mod store;
pub mod term;
pub mod text;
