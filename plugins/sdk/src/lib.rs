//! The guest SDK for writing [Capstan] stage plugins in Rust.
//!
//! A stage plugin is a WebAssembly component (target `wasm32-wasip2`,
//! crate type `cdylib`) that implements the `stage` world of the
//! `capstan:plugin` WIT package. This crate generates the bindings for that
//! world from `wit/` and wraps them in a small, typed API:
//!
//! - [`Stage`]: implement it for a type and export it with [`export_stage!`];
//! - [`Info`]: name, version and the capabilities the stage requests, each
//!   with the reason an operator or a security team reads in `capstan audit`;
//! - [`Context`]: the stage's typed `with` config, its work dir and the
//!   outputs of the stages it `needs`;
//! - [`Outcome`] / [`Error`]: what `run` hands back;
//! - [`Exec`]: start a granted program on the host (the host checks every
//!   argument against the pipeline's grant);
//! - [`log`], [`approval`], [`network`]: the other host interfaces.
//!
//! Files are read and written with plain `std::fs` (WASI preopens: only the
//! directories the pipeline grants, at the paths the host sees), environment
//! variables with `std::env::var` (only the granted ones are visible).
//!
//! The config schema the host validates `with` against is generated from
//! `Stage::Config` by [`schemars`]; doc comments on its fields become the
//! schema's descriptions. Add `#[serde(deny_unknown_fields)]` so that a typo
//! in the pipeline file is an error, not a silently ignored key. The derive
//! finds `schemars` by that name: `use capstan_plugin::schemars;` (the
//! version this SDK uses) is enough, or depend on `schemars` 1 yourself.
//!
//! # Example
//!
//! ```
//! // `schemars` as this crate re-exports it, for the derive: no
//! // dependency of your own needed.
//! use capstan_plugin::schemars::{self, JsonSchema};
//! use capstan_plugin::{Context, Error, Exec, Info, Outcome, Stage};
//! use serde::Deserialize;
//!
//! /// The stage's `with` table.
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     /// Who to greet.
//!     name: String,
//! }
//!
//! struct Greet;
//!
//! impl Stage for Greet {
//!     type Config = Config;
//!
//!     fn info() -> Info {
//!         Info::new("greet", env!("CARGO_PKG_VERSION"))
//!             .description("Greets someone through `echo`.")
//!             .exec("echo", "to print the greeting")
//!     }
//!
//!     fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
//!         let greeting = format!("hello {}", ctx.config.name);
//!         let out = Exec::new("echo").arg(&greeting).capture().run_ok()?;
//!         capstan_plugin::info!("echo took {:?}", out.duration);
//!         Ok(Outcome::new(format!("greeted {}", ctx.config.name))
//!             .output("greeting", out.stdout_str().trim()))
//!     }
//! }
//!
//! # #[cfg(target_os = "wasi")] // doctests build for the host
//! capstan_plugin::export_stage!(Greet);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the
//! `.wasm` in `target/wasm32-wasip2/release/` is the plugin.
//!
//! [Capstan]: https://example.invalid/capstan

#![deny(missing_docs)]

/// Bindings generated from `wit/` (the single source of truth for the
/// contract). Plugin authors use the typed wrappers of this crate instead.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "stage",
        pub_export_macro: true,
        default_bindings_module: "capstan_plugin::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

pub mod approval;
mod context;
mod error;
mod exec;
mod info;
pub mod log;
pub mod network;
mod outcome;
pub mod utc;

pub use context::{Context, NoConfig, Upstream};
pub use error::Error;
pub use exec::{Exec, ExecError, ExecErrorKind, ExitStatus, Output};
pub use info::{Capability, Info};
pub use outcome::Outcome;

pub use schemars;
pub use serde_json;

/// A pipeline stage: what it is ([`Stage::info`]) and what it does
/// ([`Stage::run`]). Export it with [`export_stage!`].
pub trait Stage {
    /// The stage's `with` table. Its JSON Schema (from `schemars`) is
    /// published by `describe`, and the host validates `with` against it
    /// before any stage runs.
    type Config: serde::de::DeserializeOwned + schemars::JsonSchema;

    /// Name, version, description and requested capabilities. Runs with no
    /// capabilities at all: it must not try to use any.
    fn info() -> Info;

    /// Run the stage once.
    fn run(ctx: Context<Self::Config>) -> Result<Outcome, Error>;
}

/// Export a [`Stage`] implementation as the plugin's `describe` and `run`.
///
/// Use it once per plugin crate, at the crate root:
/// `capstan_plugin::export_stage!(MyStage);`
///
/// Built for anything but a WebAssembly component target (`wasm32-wasip2`),
/// the crate fails to compile with an error saying to add `--target
/// wasm32-wasip2`; its unit tests (`cfg(test)`), docs and clippy still run
/// on the host.
#[macro_export]
macro_rules! export_stage {
    ($stage:ty) => {
        // Here, in the plugin crate, not in the SDK: the SDK itself builds
        // on the host (its tests, a plugin's unit tests), and only the
        // plugin knows it is meant to be a component. A native or core-wasm
        // build would otherwise end in a linker error about export names,
        // or a module the host refuses. Clippy builds nothing, and lints a
        // workspace's plugins on the host.
        #[cfg(not(any(
            all(target_family = "wasm", target_os = "wasi", not(target_env = "p1")),
            test,
            doc,
            clippy
        )))]
        ::core::compile_error!(
            "this Capstan plugin is being built for the wrong target: a plugin is a WebAssembly \
             component, so add `--target wasm32-wasip2` (`cargo build --release --target wasm32-wasip2`; \
             `rustup target add wasm32-wasip2` once), or make it the default with \
             `[build] target = \"wasm32-wasip2\"` in .cargo/config.toml"
        );

        const _: () = {
            struct __CapstanStage;

            impl $crate::bindings::exports::capstan::plugin::plugin::Guest for __CapstanStage {
                fn describe() -> $crate::bindings::capstan::plugin::types::PluginInfo {
                    $crate::__private::describe::<$stage>()
                }

                fn run(
                    context: $crate::bindings::capstan::plugin::types::StageContext,
                ) -> ::core::result::Result<
                    $crate::bindings::capstan::plugin::types::StageOutcome,
                    $crate::bindings::capstan::plugin::types::StageError,
                > {
                    $crate::__private::run::<$stage>(context)
                }
            }

            $crate::bindings::export! { __CapstanStage with_types_in $crate::bindings }
        };
    };
}

/// What [`export_stage!`] expands to call; not part of the API.
#[doc(hidden)]
pub mod __private {
    use crate::bindings::capstan::plugin::types::{
        PluginInfo, StageContext, StageError, StageOutcome,
    };
    use crate::{Context, Stage};

    /// `describe`: the stage's info plus the JSON Schema of its config.
    pub fn describe<S: Stage>() -> PluginInfo {
        let schema = schemars::schema_for!(S::Config);
        // A `Schema` is a JSON value: serialising it cannot fail.
        let schema = serde_json::to_string(&schema).ok();
        S::info().into_wit(schema)
    }

    /// `run`: parse the context, run the stage, convert the result.
    pub fn run<S: Stage>(context: StageContext) -> Result<StageOutcome, StageError> {
        let ctx = Context::<S::Config>::from_wit(context).map_err(crate::Error::into_wit)?;
        S::run(ctx)
            .and_then(crate::Outcome::into_wit)
            .map_err(crate::Error::into_wit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::capstan::plugin::types::{StageContext, StageError};

    /// `with` of the test stage.
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Config {
        /// How many.
        count: u32,
    }

    struct Count;

    impl Stage for Count {
        type Config = Config;
        fn info() -> Info {
            Info::new("count", "0.1.0").read("to count")
        }
        fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
            if ctx.config.count == 0 {
                return Err(Error::failed("nothing to count"));
            }
            Ok(Outcome::new("counted").output("count", ctx.config.count))
        }
    }

    fn run(config: &str) -> Result<Vec<(String, String)>, StageError> {
        let context = StageContext {
            run_id: "r".into(),
            pipeline: "p".into(),
            stage: "s".into(),
            environment: "dev".into(),
            config: config.into(),
            upstream: vec![],
            work_dir: "/w".into(),
        };
        __private::run::<Count>(context).map(|o| o.outputs)
    }

    #[test]
    fn describe_publishes_the_config_schema() {
        let info = __private::describe::<Count>();
        assert_eq!(info.name, "count");
        let schema: serde_json::Value = serde_json::from_str(&info.config_schema.unwrap()).unwrap();
        assert_eq!(schema["properties"]["count"]["description"], "How many.");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], serde_json::json!(["count"]));
    }

    #[test]
    fn run_parses_config_and_maps_errors() {
        assert_eq!(
            run(r#"{"count": 2}"#).unwrap(),
            [("count".into(), "2".into())]
        );
        assert_eq!(
            run(r#"{"count": 0}"#),
            Err(StageError::Failed("nothing to count".into()))
        );
        let Err(StageError::InvalidConfig(m)) = run(r#"{"count": -1}"#) else {
            panic!()
        };
        assert!(
            m.starts_with("field `count`: invalid value: integer `-1`"),
            "{m}"
        );
    }
}
