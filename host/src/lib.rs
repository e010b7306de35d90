//! Capstan: infrastructure delivery pipelines whose stages are WebAssembly
//! components, each confined to the capabilities its pipeline grants.
//!
//! The binary is thin (`main.rs`); everything lives here, one module per
//! concern: [`pipeline`] (file model and validation), [`runtime`] (engine,
//! cache, linker, limits), [`caps`] (capabilities and the host side of every
//! interface), [`run`] (scheduler and run directory), [`commands`] (one file
//! per subcommand), [`text`] (plugin text made safe for a terminal), [`term`]
//! (terminals, colour, tables, results on stdout).

/// `eprintln!` for the whole crate, in place of std's (a `macro_rules!`
/// defined here, before the modules, shadows the prelude's in all of them):
/// a line on stderr that can never panic (see [`term::eprint`]), printed
/// above the stage lines while a run is displayed (see
/// [`run::progress::println`]), so that no message garbles them.
macro_rules! eprintln {
    () => {
        $crate::run::progress::println("")
    };
    ($($arg:tt)*) => {
        $crate::run::progress::println(&::std::format!($($arg)*))
    };
}

/// `eprint!` for the whole crate: see `eprintln!` above.
#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::term::eprint(::std::format_args!($($arg)*))
    };
}

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
