//! `{{name}}`: a Capstan stage plugin.

// `schemars` as the SDK re-exports it, for the `JsonSchema` derive.
use capstan_plugin::schemars::{self, JsonSchema};
use capstan_plugin::{Context, Error, Info, Outcome, Stage};
use serde::Deserialize;

/// The stage's `with` table. Its JSON Schema (doc comments become the
/// descriptions) is what the host checks the pipeline file against before
/// any stage runs.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Who to greet.
    name: String,
    /// How many times to say it in the log.
    #[serde(default = "once")]
    times: u32,
}

fn once() -> u32 {
    1
}

struct {{Type}};

impl Stage for {{Type}} {
    type Config = Config;

    fn info() -> Info {
        // No capability requested: it logs and writes in its own work dir,
        // which every stage may. `.exec(program, why)`, `.env(name, why)`…
        // request more, and the pipeline must grant them.
        Info::new("{{name}}", env!("CARGO_PKG_VERSION"))
            .description("Greets someone, and keeps the greeting in greeting.txt")
    }

    fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
        let greeting = format!("Hello, {}!", ctx.config.name);
        for _ in 0..ctx.config.times {
            capstan_plugin::info!("{greeting}");
        }
        let file = ctx.work_dir.join("greeting.txt");
        std::fs::write(&file, format!("{greeting}\n"))?;
        Ok(Outcome::new(format!("greeted {}", ctx.config.name))
            .output("greeting", &greeting)
            .artifact(file))
    }
}

capstan_plugin::export_stage!({{Type}});
