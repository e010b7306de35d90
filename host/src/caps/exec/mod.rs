//! The `exec` capability: which programs a stage may start, with which
//! arguments, environment and working directory ([`policy`], pure and
//! table-tested), and the host side of the `process` interface that
//! enforces it ([`host`]), with the files children write their output to
//! ([`child_output`]); the sandbox they run in ([`sandbox`]) and the
//! cgroups that hold every process a program starts ([`cgroup`]); which
//! grants amount to running arbitrary code inside the sandbox
//! ([`arbitrary`], for `capstan audit`).

pub mod arbitrary;
pub mod cgroup;
pub mod child_output;
mod host;
mod mounts;
mod policy;
pub mod sandbox;
pub mod tree;

use wasmtime::component::{HasSelf, Linker};

pub use host::ProcessHost;
pub use policy::{Denial, ExecPolicy, ProgramFile, ResolveError, child_env, find};

use super::state::StageState;
use crate::bindings::capstan::plugin::process as wit;

pub fn add_to_linker(linker: &mut Linker<StageState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StageState, HasSelf<ProcessHost>>(linker, |s| &mut s.process)
}
