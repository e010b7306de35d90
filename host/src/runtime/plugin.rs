//! Loading a plugin: read the file, check it is a component built against a
//! compatible contract, compile it (or take it from the cache), link it, and
//! ask it to describe itself in a store with no capabilities.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::bindings::{self, CONTRACT_PACKAGE, CONTRACT_VERSION};
use super::cache::{Cache, CacheUse};
use super::{Runtime, StageState};
use crate::caps::audit::{AuditLog, StageAudit};
use crate::caps::{Capability, Request};

/// What a plugin says about itself.
#[derive(Debug, Clone, serde::Serialize)]
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
        check_header(path, &bytes)?;
        let (component, cache_use) =
            cache
                .component(&runtime.engine, &digest, &bytes)
                .map_err(|e| LoadError::Compile {
                    path: path.into(),
                    message: format!("{e:#}"),
                })?;
        let contract = check_contract(runtime, path, &component)?;
        let pre = runtime
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::StagePre::new)
            .map_err(|e| LoadError::Compile {
                path: path.into(),
                message: format!("{e:#}"),
            })?;
        let info = describe(runtime, &pre)
            .await
            .map_err(|e| LoadError::Describe {
                path: path.into(),
                message: e,
            })?;
        Ok(LoadedPlugin {
            path: path.into(),
            digest,
            contract,
            info,
            pre,
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
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not(" (no WebAssembly header)"));
    }
    if bytes[6..8] != COMPONENT_LAYER {
        return Err(not(" (it is a core module; wrap it as a component)"));
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

/// Call `describe` with no capabilities, 64 MiB and 10 seconds.
async fn describe(runtime: &Runtime, pre: &bindings::StagePre<StageState>) -> Result<Info, String> {
    let state = StageState::sealed(64 << 20);
    let mut store = runtime.store(state, Instant::now() + Duration::from_secs(10));
    let instance = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let info = instance
        .capstan_plugin_plugin()
        .call_describe(&mut store)
        .await
        .map_err(|e| format!("{e:#}"))?;
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

impl From<bindings::capstan::plugin::types::Capability> for Capability {
    fn from(c: bindings::capstan::plugin::types::Capability) -> Self {
        use bindings::capstan::plugin::types::Capability as W;
        match c {
            W::Exec(p) => Capability::Exec(p),
            W::Read => Capability::Read,
            W::Write => Capability::Write,
            W::Env(n) => Capability::Env(n),
            W::Secret(n) => Capability::Secret(n),
            W::Connect => Capability::Connect,
            W::Approval => Capability::Approval,
        }
    }
}

impl StageState {
    /// A state with no capabilities at all: no preopens, no env, no
    /// programs, no network, no approval; output counted and dropped.
    pub fn sealed(memory: usize) -> StageState {
        let audit = StageAudit {
            log: AuditLog::discard(),
            stage: String::new(),
            plugin: String::new(),
        };
        let sink = crate::caps::log::LogSink::discard(1 << 20);
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        wasi.stdout(sink.clone()).stderr(sink.clone());
        StageState {
            wasi: wasi.build(),
            table: Default::default(),
            limiter: super::Limiter {
                memory,
                hit: super::memory_flag(),
            },
            log: crate::caps::log::LogHost { sink: sink.clone() },
            process: crate::caps::process::ProcessHost {
                policies: Vec::new(),
                dirs: Vec::new(),
                work_dir: PathBuf::from("/nonexistent"),
                log: sink,
                audit: audit.clone(),
                deadline: Instant::now(),
                capture_cap: 0,
            },
            network: crate::caps::network::NetworkHost {
                patterns: Vec::new(),
                audit: audit.clone(),
            },
            approval: crate::caps::approval::ApprovalHost {
                granted: false,
                audit,
                run: crate::caps::approval::RunInfo {
                    run_id: String::new(),
                    author: String::new(),
                    environment: String::new(),
                },
                interactive: false,
                pending: Default::default(),
                store: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn contract_compatibility() {
        for (v, ok) in [
            ("0.1.0", true),
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
