//! Loading a plugin: read the file, check it is a component built against a
//! compatible contract, compile it (or take it from the cache), link it, and
//! ask it to describe itself in a store with no capabilities.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::bounds::{self, BoundsError};
use super::cache::{Cache, CacheUse, CompileError};
use super::{Runtime, StageState};
use crate::bindings::{self, CONTRACT_PACKAGE, CONTRACT_VERSION};
use crate::caps::{Capability, Request};

/// What a plugin says about itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub description: String,
    pub requests: Vec<Request>,
    pub config_schema: Option<serde_json::Value>,
}

/// A compiled, linked plugin, ready to instantiate once per stage.
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub digest: String,
    /// The contract version the plugin was built against.
    pub contract: String,
    pub info: Info,
    pub pre: bindings::StagePre<StageState>,
    /// The runtime it was compiled for: its stores must be made there.
    pub runtime: Runtime,
    pub cache: CacheUse,
    pub load_time: Duration,
}

/// Why a plugin cannot be used. Each message names the file.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read plugin `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "plugin `{path}` changed since the pipeline was validated (sha256 now {actual}, was {expected})"
    )]
    Changed {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "`{path}` is not a WebAssembly component{detail}; build the plugin for the wasm32-wasip2 target (e.g. `cargo build --target wasm32-wasip2 --release`)"
    )]
    NotComponent { path: PathBuf, detail: String },
    #[error(
        "`{path}` is {built}: the plugin was built for the wrong target; {}",
        super::target::FIX
    )]
    WrongTarget { path: PathBuf, built: String },
    #[error(
        "plugin `{path}` was built against contract {CONTRACT_PACKAGE}@{found}, but this host speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION}; rebuild it with a capstan-plugin SDK for contract {CONTRACT_VERSION}"
    )]
    Contract { path: PathBuf, found: String },
    #[error(
        "`{path}` is a component but not a Capstan stage plugin: it does not export `{CONTRACT_PACKAGE}/plugin@{CONTRACT_VERSION}` (exports: {exports})"
    )]
    NotAStage { path: PathBuf, exports: String },
    #[error("plugin `{path}` imports `{import}`, which Capstan does not provide{hint}")]
    Import {
        path: PathBuf,
        import: String,
        hint: String,
    },
    #[error("plugin `{path}` exceeds Capstan's limits for plugins: {source}")]
    Bounds { path: PathBuf, source: BoundsError },
    #[error("cannot compile plugin `{path}`: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("plugin `{path}` failed to describe itself: {message}")]
    Describe { path: PathBuf, message: String },
}

/// The component-model layer byte after the version word of the header.
const COMPONENT_LAYER: [u8; 2] = [0x01, 0x00];

impl LoadedPlugin {
    /// Load the plugin at `path`; `expected` is the sha256 the pipeline
    /// validated, so a file swapped since then is refused.
    pub async fn load(
        runtime: &Runtime,
        cache: &Cache,
        path: &Path,
        expected: Option<&str>,
    ) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.into(),
            source,
        })?;
        let digest = hex::encode(Sha256::digest(&bytes));
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(LoadError::Changed {
                path: path.into(),
                expected: expected.into(),
                actual: digest,
            });
        }
        Self::from_bytes(runtime, cache, path, &bytes, digest, started).await
    }

    /// Load a plugin of a validated pipeline from the bytes that were
    /// hashed when it was validated.
    pub async fn load_validated(
        runtime: &Runtime,
        cache: &Cache,
        plugin: &crate::pipeline::PluginRef,
    ) -> Result<LoadedPlugin, LoadError> {
        let started = Instant::now();
        let (bytes, digest) = (&plugin.bytes.0, plugin.digest.clone());
        Self::from_bytes(runtime, cache, &plugin.path, bytes, digest, started).await
    }

    async fn from_bytes(
        runtime: &Runtime,
        cache: &Cache,
        path: &Path,
        bytes: &[u8],
        digest: String,
        started: Instant,
    ) -> Result<LoadedPlugin, LoadError> {
        check_header(path, bytes)?;
        // Bounded before any compiling: its cost grows with the shape, not
        // the size.
        let compile = |runtime: &Runtime| {
            cache.component(&runtime.engine, &digest, bytes, || {
                bounds::check(bytes).map(drop)
            })
        };
        let compile_error = |e| match e {
            CompileError::Check(source) => LoadError::Bounds {
                path: path.into(),
                source,
            },
            CompileError::Compile(e) => LoadError::Compile {
                path: path.into(),
                message: format!("{e:#}"),
            },
        };
        // What Winch does not compile (tail calls, relaxed SIMD), Cranelift
        // does: a plugin is refused only when neither can.
        let (runtime, (component, cache_use)) = match compile(runtime) {
            Err(CompileError::Compile(_)) if let Some(fallback) = runtime.fallback() => {
                let fallback = fallback.map_err(|message| LoadError::Compile {
                    path: path.into(),
                    message,
                })?;
                let compiled = compile(&fallback).map_err(compile_error)?;
                (fallback, compiled)
            }
            compiled => (runtime.clone(), compiled.map_err(compile_error)?),
        };
        let runtime = &runtime;
        let contract = check_contract(runtime, path, &component)?;
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::StagePre::new)
            .map_err(|e| LoadError::Compile {
                path: path.into(),
                message: format!("{e:#}"),
            })?;
        // `describe` runs with nothing granted and no input, so its answer
        // is a property of the component: kept beside the verified compiled
        // entry (MAC'd with it), and asked again whenever it was compiled.
        let kept = (cache_use == CacheUse::Hit)
            .then(|| cache.info::<Info>(&runtime.engine, &digest))
            .flatten();
        let info = match kept {
            Some(info) => info,
            None => {
                let info = describe(runtime, &pre)
                    .await
                    .map_err(|e| LoadError::Describe {
                        path: path.into(),
                        message: e,
                    })?;
                cache.keep_info(&runtime.engine, &digest, &info);
                info
            }
        };
        Ok(LoadedPlugin {
            path: path.into(),
            digest,
            contract,
            info,
            pre,
            runtime: runtime.clone(),
            cache: cache_use,
            load_time: started.elapsed(),
        })
    }
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    let not = |detail: &str| LoadError::NotComponent {
        path: path.into(),
        detail: detail.into(),
    };
    if let Some(built) = super::target::built_for_another_target(bytes) {
        return Err(LoadError::WrongTarget {
            path: path.into(),
            built,
        });
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not(" (no WebAssembly header)"));
    }
    if bytes[6..8] != COMPONENT_LAYER {
        return Err(not(" (an unknown WebAssembly layer)"));
    }
    Ok(())
}

/// The contract version in the component's export and import names.
fn check_contract(
    runtime: &Runtime,
    path: &Path,
    component: &wasmtime::component::Component,
) -> Result<String, LoadError> {
    let ty = component.component_type();
    let wanted = format!("{CONTRACT_PACKAGE}/plugin@");
    let exports: Vec<String> = ty
        .exports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let Some(found) = exports.iter().find_map(|n| n.strip_prefix(&wanted)) else {
        return Err(LoadError::NotAStage {
            path: path.into(),
            exports: exports.join(", "),
        });
    };
    if !compatible(found) {
        return Err(LoadError::Contract {
            path: path.into(),
            found: found.into(),
        });
    }
    for (import, _) in ty.imports(&runtime.engine) {
        if let Some(rest) = import.strip_prefix(&format!("{CONTRACT_PACKAGE}/")) {
            let version = rest.split_once('@').map_or("", |(_, v)| v);
            if !compatible(version) {
                return Err(LoadError::Contract {
                    path: path.into(),
                    found: version.into(),
                });
            }
        } else if import.starts_with("wasi:sockets/") {
            // Linked, but every address is denied: plugins have no sockets.
        } else if !import.starts_with("wasi:") {
            return Err(LoadError::Import {
                path: path.into(),
                import: import.to_string(),
                hint: "; plugins may import only the capstan:plugin interfaces and WASI preview 2"
                    .into(),
            });
        }
    }
    Ok(found.to_string())
}

/// Whether a plugin's contract version links with this host's: same major
/// version, and for 0.x the same minor (semver's rule for pre-1.0).
fn compatible(version: &str) -> bool {
    let (Ok(theirs), Ok(ours)) = (
        semver::Version::parse(version),
        semver::Version::parse(CONTRACT_VERSION),
    ) else {
        return false;
    };
    theirs.major == ours.major && (ours.major > 0 || theirs.minor == ours.minor) && theirs <= ours
}

/// How long a plugin has to instantiate (start functions included) and
/// describe itself. Describing is reading constants: a plugin that takes
/// longer is broken or hostile, and `validate`, `audit`, `plugin describe`
/// and `run` must not wait on it.
pub const DESCRIBE_TIME: Duration = Duration::from_secs(5);

/// The linear memory a plugin may use while describing itself.
pub const DESCRIBE_MEMORY: usize = 64 << 20;

/// Call `describe` with no capabilities, [`DESCRIBE_MEMORY`] and
/// [`DESCRIBE_TIME`].
///
/// The epoch deadline stops guest code that computes past the budget, but
/// not a guest blocked in a host call (a WASI clock wait, say), where epochs
/// are not checked; the outer timeout covers that, dropping the future and
/// with it the store and the instance.
async fn describe(runtime: &Runtime, pre: &bindings::StagePre<StageState>) -> Result<Info, String> {
    let state = StageState::sealed(DESCRIBE_MEMORY);
    let mut store = runtime.store(state, Instant::now() + DESCRIBE_TIME);
    let info = within(DESCRIBE_TIME, async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance
            .capstan_plugin_plugin()
            .call_describe(&mut store)
            .await
    })
    .await?;
    let config_schema = match info.config_schema {
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| format!("its config schema is not JSON: {e}"))?,
        ),
        None => None,
    };
    Ok(Info {
        name: info.name,
        version: info.version,
        description: info.description,
        requests: info
            .requests
            .into_iter()
            .map(|r| Request {
                capability: r.capability.into(),
                reason: r.reason,
            })
            .collect(),
        config_schema,
    })
}

/// Run `call` (instantiating a plugin and calling `describe`) for at most
/// `budget`. The store's epoch deadline ends at the same moment and stops
/// guest code that computes; the timeout stops everything else, a guest
/// blocked in a host call included. Either way the message is the same.
async fn within<T>(
    budget: Duration,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> Result<T, String> {
    let too_slow = || {
        format!(
            "it did not describe itself within {} (instantiating a plugin and calling `describe` must neither wait nor compute for long)",
            humantime::format_duration(budget)
        )
    };
    match tokio::time::timeout(budget, call).await {
        Err(_elapsed) => Err(too_slow()),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => Err(too_slow()),
            _ => Err(format!("{e:#}")),
        },
    }
}

impl From<bindings::capstan::plugin::types::Capability> for Capability {
    fn from(c: bindings::capstan::plugin::types::Capability) -> Self {
        use bindings::capstan::plugin::types::Capability as W;
        match c {
            W::Exec(p) if p == "*" => Capability::ExecGranted,
            W::Exec(p) => Capability::Exec(p),
            W::Read => Capability::Read,
            W::Write => Capability::Write,
            W::Env(n) if n == "*" => Capability::EnvGranted,
            W::Env(n) => Capability::Env(n),
            W::Secret(n) if n == "*" => Capability::SecretGranted,
            W::Secret(n) => Capability::Secret(n),
            W::Connect => Capability::Connect,
            W::Approval => Capability::Approval,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::{LoadError, LoadedPlugin, within};
    use crate::runtime::bounds::{Bound, BoundsError};
    use crate::runtime::cache::Cache;
    use crate::runtime::{Runtime, bounds};

    #[tokio::test]
    async fn a_call_that_waits_past_the_budget_is_ended() {
        // As a guest blocked in a host call: pending, never interrupted.
        let err = within::<()>(Duration::from_millis(20), std::future::pending())
            .await
            .unwrap_err();
        assert!(
            err.starts_with("it did not describe itself within 20ms"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_interrupted_call_says_the_same() {
        let interrupted = async { Err::<(), _>(wasmtime::Error::from(wasmtime::Trap::Interrupt)) };
        let err = within(super::DESCRIBE_TIME, interrupted).await.unwrap_err();
        assert!(
            err.starts_with("it did not describe itself within 5s"),
            "{err}"
        );
        let failed = async { Err::<(), _>(wasmtime::Error::msg("boom")) };
        assert_eq!(
            within(super::DESCRIBE_TIME, failed).await.unwrap_err(),
            "boom"
        );
    }

    /// A component whose one core function tail-calls itself: valid wasm
    /// that Winch does not compile (tail calls), Cranelift does.
    fn tail_calling_component() -> Vec<u8> {
        use wasm_encoder::{
            CodeSection, Component, Function, FunctionSection, Instruction, Module, ModuleSection,
            TypeSection,
        };
        let mut types = TypeSection::new();
        types.ty().function([], []);
        let mut functions = FunctionSection::new();
        functions.function(0);
        let mut body = Function::new([]);
        body.instruction(&Instruction::ReturnCall(0));
        body.instruction(&Instruction::End);
        let mut code = CodeSection::new();
        code.function(&body);
        let mut module = Module::new();
        module.section(&types).section(&functions).section(&code);
        let mut component = Component::new();
        component.section(&ModuleSection(&module));
        component.finish()
    }

    #[tokio::test]
    async fn what_winch_cannot_compile_is_compiled_by_cranelift() {
        let bytes = tail_calling_component();
        let runtime = Runtime::new().unwrap();
        if let Some(cranelift) = runtime.fallback() {
            let cranelift = cranelift.unwrap();
            assert!(
                wasmtime::component::Component::from_binary(&runtime.engine, &bytes).is_err(),
                "Winch compiled a tail call: this test needs a construct it does not compile"
            );
            wasmtime::component::Component::from_binary(&cranelift.engine, &bytes).unwrap();
        }
        // A load gets past compiling it (and then finds it is no plugin).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tail-call.wasm");
        std::fs::write(&path, &bytes).unwrap();
        let Err(err) = LoadedPlugin::load(&runtime, &Cache::disabled(), &path, None).await else {
            panic!("loaded");
        };
        assert!(!matches!(err, LoadError::Compile { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_component_over_the_bounds_is_refused_before_compiling() {
        let mut component = wasm_encoder::Component::new();
        for _ in 0..20 {
            let mut outer = wasm_encoder::Component::new();
            outer.section(&wasm_encoder::NestedComponentSection(&component));
            component = outer;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested.wasm");
        std::fs::write(&path, component.finish()).unwrap();
        let runtime = Runtime::new().unwrap();
        let Err(err) = LoadedPlugin::load(&runtime, &Cache::disabled(), &path, None).await else {
            panic!("loaded");
        };
        let max = bounds::PLUGIN_LIMITS.depth;
        assert!(
            matches!(
                &err,
                LoadError::Bounds {
                    source: BoundsError::Exceeded {
                        bound: Bound::Depth,
                        ..
                    },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "plugin `{}` exceeds Capstan's limits for plugins: the nesting depth of its components and modules reaches {}, over the limit of {max}",
                path.display(),
                max + 1
            )
        );
    }

    #[tokio::test]
    async fn a_first_party_plugin_loads_and_describes_itself_within_the_budget() {
        let runtime = Runtime::new().unwrap();
        let path = Path::new(capstan_test_artifacts::HELLO);
        let plugin = LoadedPlugin::load(&runtime, &Cache::disabled(), path, None)
            .await
            .unwrap();
        assert!(!plugin.info.name.is_empty());
    }

    #[tokio::test]
    async fn a_plugin_that_sleeps_in_describe_is_refused_after_the_budget() {
        // Blocked in a WASI clock wait, where epoch interruption never fires.
        let runtime = Runtime::new().unwrap();
        let path = Path::new(capstan_test_artifacts::SLEEPY_DESCRIBE);
        let started = std::time::Instant::now();
        let Err(err) = LoadedPlugin::load(&runtime, &Cache::disabled(), path, None).await else {
            panic!("loaded");
        };
        assert!(started.elapsed() < super::DESCRIBE_TIME * 3);
        assert!(matches!(err, LoadError::Describe { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "plugin `{}` failed to describe itself: it did not describe itself within 5s (instantiating a plugin and calling `describe` must neither wait nor compute for long)",
                path.display()
            )
        );
    }

    #[test]
    fn exec_star_asks_for_the_programs_the_stage_grants() {
        use crate::bindings::capstan::plugin::types::Capability as W;
        use crate::caps::Capability;
        assert_eq!(
            Capability::from(W::Exec("*".into())),
            Capability::ExecGranted
        );
        assert_eq!(
            Capability::from(W::Exec("sh".into())),
            Capability::Exec("sh".into())
        );
        assert_eq!(Capability::from(W::Env("*".into())), Capability::EnvGranted);
        assert_eq!(
            Capability::from(W::Env("HOME".into())),
            Capability::Env("HOME".into())
        );
        assert_eq!(
            Capability::from(W::Secret("*".into())),
            Capability::SecretGranted
        );
        assert_eq!(
            Capability::from(W::Secret("token".into())),
            Capability::Secret("token".into())
        );
    }

    #[test]
    fn contract_compatibility() {
        for (v, ok) in [
            ("0.1.0", true),
            ("0.1.1", true),
            ("0.1.2", false),
            ("0.0.9", false),
            ("0.2.0", false),
            ("1.0.0", false),
            ("0.1.9", false),
            ("x", false),
        ] {
            assert_eq!(super::compatible(v), ok, "{v}");
        }
    }
}
