//! The WebAssembly runtime: one engine, the linker with every interface a
//! plugin may import, per-stage stores with limits, and the compiled
//! component cache.

pub mod bounds;
pub mod cache;
pub mod plugin;
pub mod target;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, OptLevel, Store, UpdateDeadline};

pub use crate::caps::state::StageState;

/// How often the engine's epoch advances; the granularity of wall-clock
/// limits on plugin code.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine and linker shared by every stage of a run.
#[derive(Clone)]
pub struct Runtime {
    pub engine: Engine,
    pub linker: Arc<Linker<StageState>>,
    /// The Cranelift runtime for a plugin this one's compiler (Winch)
    /// cannot compile, made on first need; `None` in that runtime itself.
    fallback: Option<Arc<OnceLock<Result<Runtime, String>>>>,
}

/// Which of wasmtime's compilers a [`Runtime`] uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compiler {
    /// Single-pass: compiles several times faster. Not every proposal
    /// (tail calls, relaxed SIMD) and only on x86_64.
    Winch,
    Cranelift,
}

impl Runtime {
    /// The runtime plugins are compiled with: Winch where it targets the
    /// host, with Cranelift behind it (see [`Runtime::fallback`]).
    pub fn new() -> wasmtime::Result<Runtime> {
        if cfg!(target_arch = "x86_64") {
            let mut winch = Runtime::with(Compiler::Winch)?;
            winch.fallback = Some(Arc::new(OnceLock::new()));
            Ok(winch)
        } else {
            Runtime::with(Compiler::Cranelift)
        }
    }

    /// The runtime to compile a plugin with when this one could not: for a
    /// plugin that uses what Winch does not compile. `None` when this is
    /// already Cranelift's.
    pub fn fallback(&self) -> Option<Result<Runtime, String>> {
        let cell = self.fallback.as_ref()?;
        Some(
            cell.get_or_init(|| Runtime::with(Compiler::Cranelift).map_err(|e| format!("{e:#}")))
                .clone(),
        )
    }

    fn with(compiler: Compiler) -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Plugins are glue around the programs they start: compiling them
        // fast matters more than their code's speed. Winch, wasmtime's
        // single-pass compiler (Tier 1 on x86_64, as Cranelift), compiles
        // the five first-party plugins in 0.6 s where Cranelift took 2.1 s
        // (README, "Benchmarks"), with a stage's run no longer; bounds
        // checks, traps and epoch checks are emitted all the same. Cranelift
        // compiles the component trampolines, and what Winch cannot
        // (`fallback`), unoptimised.
        if compiler == Compiler::Winch {
            config.strategy(wasmtime::Strategy::Winch);
        }
        config.cranelift_opt_level(OptLevel::None);
        let engine = Engine::new(&config)?;
        // The ticker outlives every store; a weak handle lets it stop with
        // the engine.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("capstan-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::caps::log::add_to_linker(&mut linker)?;
        crate::caps::exec::add_to_linker(&mut linker)?;
        crate::caps::network::add_to_linker(&mut linker)?;
        crate::caps::approval::add_to_linker(&mut linker)?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            fallback: None,
        })
    }

    /// A store whose plugin code stops at `deadline` and whose memory is
    /// capped by `state.limiter`.
    pub fn store(&self, state: StageState, deadline: Instant) -> Store<StageState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }
}
