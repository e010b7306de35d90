//! `smoke-test`: declarative smoke checks after a deployment.
//!
//! Each check has a name, a category (`connectivity`, `service`,
//! `security`, `functionality`), a kind and the fields of its kind:
//!
//! | kind | checks | through |
//! |---|---|---|
//! | `tcp` | `host:port` accepts a connection within `timeout` | the host's `network.tcp-probe` (`connect` grant) |
//! | `http` | a plain `http://` URL answers `status` (200) with a body matching `body` | the host's `network.http-get` (`connect` grant) |
//! | `command` | a program exits with `expect_status` (0), its stdout / stderr match regexes | `ansible` or `stat` (`exec` grants): e.g. an ad-hoc `ansible all -i INVENTORY -m command -a "test -f /x"` |
//! | `file` | a path exists (or, with `exists = false`, does not), has `mode`, its content matches `contains` | the plugin's own WASI preopens (`read` grant); the mode from one batched `stat` |
//!
//! The stage writes `junit.xml` (one test suite per category) and
//! `report.json` into its work dir, sets the JSON as the stage report,
//! prints a summary table to its log, and outputs `passed`, `failed`,
//! `total`, `failed_checks`, `junit_file` and `report_file`. It fails when
//! a required check (the default) failed, naming each; an optional one
//! (`required = false`) is reported but does not fail it.
//!
//! What runs at the same time is explained in [`checks`]: in short, the
//! contract's host calls are synchronous, so probes and commands run one
//! after the other; file checks need no host call and all modes come from
//! one `stat`.

mod checks;
mod config;
mod junit;
mod report;

use std::path::Path;
use std::time::{Instant, SystemTime};

use capstan_plugin::{Context, Error, Info, Outcome, Stage};

use crate::checks::{Capstan, Status};
pub use crate::config::Config;

struct SmokeTest;

impl Stage for SmokeTest {
    type Config = Config;

    fn info() -> Info {
        Info::new("smoke-test", env!("CARGO_PKG_VERSION"))
            .description(
                "Runs declarative smoke checks (tcp, http, command, file) in four categories, \
                 writes JUnit XML and JSON reports, and fails naming each failed required check",
            )
            .connect(
                "to probe the endpoints of `tcp` checks and GET the URLs of `http` checks; \
                 each host:port must match the stage's `connect` grant",
            )
            .read(
                "to look at the paths of `file` checks (existence, content); they must be \
                 inside the stage's `read` grants",
            )
            .exec(
                "stat",
                "to read the permission bits of `file` checks with `mode` (WASI has none): one \
                 `stat -L -c '%a %n' -- PATH…` for all of them",
            )
            .exec(
                "ansible",
                "to run `command` checks on the inventory's hosts, e.g. \
                 `ansible all -i INVENTORY -m command -a 'test -f /etc/motd'`",
            )
    }

    fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
        let checks = ctx.config.checks().map_err(Error::config)?;
        let started = Instant::now();
        let started_at = SystemTime::now();
        let results = checks::run_all(&checks, &mut Capstan, |r| {
            let line = format!("{} [{}] {}: {}", label(r.status), r.kind, r.name, r.message);
            match r.status {
                Status::Passed => capstan_plugin::info!("{line}"),
                _ if !r.required => capstan_plugin::warn!("{line} (optional)"),
                _ => capstan_plugin::error!("{line}"),
            }
        });
        let elapsed = started.elapsed();

        let junit_file = ctx.work_dir.join("junit.xml");
        let report_file = ctx.work_dir.join("report.json");
        let (junit_s, report_s) = (display(&junit_file), display(&report_file));
        let xml = junit::write(
            &junit::Suite {
                name: &format!("{}/{}", ctx.pipeline, ctx.stage),
                stage: &ctx.stage,
                timestamp: &timestamp(started_at, false),
                time: elapsed.as_secs_f64(),
            },
            &results,
        );
        std::fs::write(&junit_file, xml).map_err(|e| write_error(&junit_file, e))?;
        let report = report::json(
            &report::Meta {
                pipeline: &ctx.pipeline,
                stage: &ctx.stage,
                run_id: &ctx.run_id,
                environment: &ctx.environment,
                started_at: &timestamp(started_at, true),
                duration_ms: elapsed.as_millis(),
                junit_file: &junit_s,
            },
            &results,
        );
        let mut json = serde_json::to_string_pretty(&report)?;
        json.push('\n');
        std::fs::write(&report_file, json).map_err(|e| write_error(&report_file, e))?;

        println!("\n{}", report::table(&results, elapsed));
        capstan_plugin::info!("reports: {junit_s}, {report_s}");
        // One record per failed check, at the level it fails the stage with:
        // CI systems turn these into annotations (GitHub Actions does).
        for r in results.iter().filter(|r| !r.passed()) {
            let what = format!(
                "smoke check `{}` failed ({}): {}",
                r.name, r.target, r.message
            );
            if r.required {
                capstan_plugin::error!("{what}");
            } else {
                capstan_plugin::warn!("{what} (not required)");
            }
        }

        if let Some(message) = report::failure(&results) {
            return Err(Error::failed(message));
        }
        let counts = report::Counts::of(&results);
        Ok(Outcome::new(report::success(&results))
            .output("passed", counts.passed)
            .output("failed", counts.failed)
            .output("total", counts.total)
            .output("failed_checks", report::failed_names(&results))
            .output("junit_file", &junit_s)
            .output("report_file", &report_s)
            .artifact(&junit_file)
            .artifact(&report_file)
            .report(report))
    }
}

capstan_plugin::export_stage!(SmokeTest);

fn label(status: Status) -> &'static str {
    match status {
        Status::Passed => "pass",
        Status::Failed => "FAIL",
        Status::Error => "ERROR",
    }
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn write_error(path: &Path, e: std::io::Error) -> Error {
    Error::failed(format!("cannot write {}: {e}", path.display()))
}

/// `2026-01-02T03:04:05` (JUnit's form, UTC) or with a `Z` (RFC 3339).
fn timestamp(at: SystemTime, zulu: bool) -> String {
    let rfc3339 = capstan_plugin::utc::Utc::from_system_time(at).rfc3339();
    if zulu {
        rfc3339
    } else {
        rfc3339.trim_end_matches('Z').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps() {
        let at = UNIX_EPOCH + Duration::from_secs(1_772_429_045);
        assert_eq!(timestamp(at, false), "2026-03-02T05:24:05");
        assert_eq!(timestamp(UNIX_EPOCH, true), "1970-01-01T00:00:00Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(11_016 * 86_400);
        assert_eq!(timestamp(leap_day, true), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn describe_requests_a_small_fixed_set() {
        use capstan_plugin::Capability;
        let info = SmokeTest::info();
        let caps: Vec<&Capability> = info.requests().iter().map(|(c, _)| c).collect();
        assert_eq!(
            caps,
            [
                &Capability::Connect,
                &Capability::Read,
                &Capability::Exec("stat".into()),
                &Capability::Exec("ansible".into()),
            ]
        );
        for program in config::PROGRAMS {
            assert!(caps.contains(&&Capability::Exec(program.into())));
        }
    }
}
