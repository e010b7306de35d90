//! Test fixture: a plugin whose `describe` sleeps for an hour.
//!
//! `describe` runs whenever a plugin is loaded (`capstan plugin describe`,
//! `validate`, `audit`, `run`); the host gives it a small time budget, so
//! this plugin must be refused with a message saying it did not describe
//! itself in time, and no command may hang on it. No real plugin sleeps in
//! `describe`: this one exists only to prove the budget.

use std::time::Duration;

use capstan_plugin::{Context, Error, Info, NoConfig, Outcome, Stage};

struct SleepyDescribe;

impl Stage for SleepyDescribe {
    type Config = NoConfig;

    fn info() -> Info {
        std::thread::sleep(Duration::from_secs(3600));
        Info::new("sleepy-describe", env!("CARGO_PKG_VERSION"))
            .description("Test fixture whose describe sleeps for an hour.")
    }

    fn run(_ctx: Context<NoConfig>) -> Result<Outcome, Error> {
        Ok(Outcome::new("woke up"))
    }
}

capstan_plugin::export_stage!(SleepyDescribe);
