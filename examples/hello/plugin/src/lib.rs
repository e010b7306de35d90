//! `hello`: the demo stage plugin, and the smallest complete example of the
//! `capstan-plugin` SDK.
//!
//! It runs `echo <message>` through the host (the pipeline must grant
//! `exec echo`), writes what `echo` printed to `<work dir>/message.txt`, and
//! outputs `message` (the echoed text) and `length` (its length in
//! characters) for downstream stages.
//!
//! ```toml
//! [stages.greet]
//! plugin = "hello"
//! with = { message = "hello, world" }
//!
//! [[stages.greet.grants.exec]]
//! program = "echo"
//! args = ["*"]
//! ```
//!
//! (`examples/hello/pipeline.toml` is the whole pipeline.)
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p capstan-hello`.

use capstan_plugin::{Context, Error, Exec, Info, Outcome, Stage};
use schemars::JsonSchema;
use serde::Deserialize;

/// The stage's `with` table.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// What to say.
    message: String,
}

struct Hello;

impl Stage for Hello {
    type Config = Config;

    fn info() -> Info {
        Info::new("hello", env!("CARGO_PKG_VERSION"))
            .description("Says a message through `echo` and keeps it in message.txt.")
            .exec("echo", "to print the greeting through a real host program")
    }

    fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
        let out = Exec::new("echo")
            .arg(&ctx.config.message)
            .capture()
            .run_ok()?;
        let file = ctx.work_dir.join("message.txt");
        std::fs::write(&file, &out.stdout)
            .map_err(|e| Error::failed(format!("{}: {e}", file.display())))?;
        let said = out.stdout_str().trim().to_string();
        Ok(Outcome::new(format!("said: {said}"))
            .output("message", &said)
            .output("length", said.chars().count())
            .artifact(file))
    }
}

capstan_plugin::export_stage!(Hello);
