//! Placeholder: replaced by the real plugin.
use capstan_plugin::{Context, Error, Info, NoConfig, Outcome, Stage};

struct Placeholder;

impl Stage for Placeholder {
    type Config = NoConfig;
    fn info() -> Info {
        Info::new("capstan-terraform", env!("CARGO_PKG_VERSION")).description("placeholder")
    }
    fn run(_ctx: Context<NoConfig>) -> Result<Outcome, Error> {
        Err(Error::failed("not implemented yet"))
    }
}

capstan_plugin::export_stage!(Placeholder);
