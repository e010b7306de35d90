//! `change-window`: a policy stage written the way a team outside the
//! Capstan project would write one — against the published SDK
//! (`capstan-plugin`) only, built to a `.wasm`, and added to a pipeline by
//! editing the pipeline file. The host is not rebuilt.
//!
//! In the environments it enforces (default: `production`) it fails the run
//!
//! - outside the change window (allowed UTC weekdays and hours), and
//! - when the upstream Terraform plan destroys more resources (deletes and
//!   replaces) than `max_destroy` (default 0),
//!
//! unless an operator gives an emergency override reason — `override_reason`
//! in the pipeline file, or the `CHANGE_WINDOW_OVERRIDE` environment
//! variable of the `capstan run` — which lets the change through and is
//! recorded loudly (warning in the log, `decision = "overridden"`, the
//! reason in the outputs and report). In other environments it only reports
//! what it would have decided.
//!
//! It needs a single capability: reading that one environment variable.

use std::time::{SystemTime, UNIX_EPOCH};

use capstan_plugin::{Context, Error, Info, Outcome, Stage};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The environment variable an operator sets for an emergency override.
pub const OVERRIDE_ENV: &str = "CHANGE_WINDOW_OVERRIDE";

/// The stage's `with` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Environments where the window and the destroy limit are enforced; in
    /// the others the stage passes and reports what it would have decided.
    #[serde(default = "default_enforce_in")]
    pub enforce_in: Vec<String>,
    /// Weekdays (UTC) on which changes are allowed. Default: mon–thu.
    #[serde(default = "default_days")]
    pub days: Vec<Weekday>,
    /// Allowed time of day (UTC) as "HH:MM-HH:MM", start included, end
    /// excluded; a window may cross midnight ("22:00-02:00"); "00:00-24:00"
    /// is the whole day. Default: "08:00-16:00".
    #[serde(default = "default_hours")]
    #[schemars(regex(pattern = r"^[0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]$"))]
    pub hours: String,
    /// The plan's change counts, from the Terraform plan stage:
    /// `plan_summary = "${stages.plan.outputs.summary}"`. Without it only
    /// the window is checked.
    #[serde(default)]
    pub plan_summary: Option<PlanSummary>,
    /// Most resources the plan may destroy (deletes + replaces) in an
    /// enforced environment. Default: 0.
    #[serde(default)]
    pub max_destroy: u64,
    /// Emergency override: with a non-empty reason, violations are let
    /// through and recorded. Operators usually give it at run time through
    /// the `CHANGE_WINDOW_OVERRIDE` environment variable instead.
    #[serde(default)]
    pub override_reason: Option<String>,
}

fn default_enforce_in() -> Vec<String> {
    vec!["production".into()]
}

fn default_days() -> Vec<Weekday> {
    use Weekday::*;
    vec![Mon, Tue, Wed, Thu]
}

fn default_hours() -> String {
    "08:00-16:00".into()
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    fn name(self) -> &'static str {
        match self {
            Weekday::Mon => "Monday",
            Weekday::Tue => "Tuesday",
            Weekday::Wed => "Wednesday",
            Weekday::Thu => "Thursday",
            Weekday::Fri => "Friday",
            Weekday::Sat => "Saturday",
            Weekday::Sun => "Sunday",
        }
    }
}

/// The counts this stage reads from a Terraform plan summary. Other keys
/// of the summary are ignored, so that it keeps working when the plan
/// stage adds some.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct PlanSummary {
    /// Resources to create.
    #[serde(default)]
    pub create: u64,
    /// Resources to update in place.
    #[serde(default)]
    pub update: u64,
    /// Resources to delete.
    #[serde(default, alias = "destroy")]
    pub delete: u64,
    /// Resources to replace (delete, then create).
    #[serde(default)]
    pub replace: u64,
}

/// A moment, in UTC, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// Day of the week.
    pub weekday: Weekday,
    /// Minutes since midnight.
    pub minute: u32,
    /// Seconds since the Unix epoch (for the record).
    pub unix: u64,
}

impl Moment {
    /// The moment `unix` seconds after 1970-01-01T00:00:00Z (a Thursday).
    pub fn from_unix(unix: u64) -> Moment {
        let days = unix / 86_400;
        Moment {
            weekday: Weekday::ALL[((days + 3) % 7) as usize],
            minute: (unix % 86_400 / 60) as u32,
            unix,
        }
    }

    fn hhmm(self) -> String {
        format!("{:02}:{:02}", self.minute / 60, self.minute % 60)
    }

    /// RFC 3339, e.g. `2026-11-26T10:15:00Z`.
    pub fn rfc3339(self) -> String {
        capstan_plugin::utc::Utc::from_unix(self.unix).rfc3339()
    }
}

/// `"08:00-16:00"` → (480, 960) in minutes since midnight.
fn parse_hours(text: &str) -> Result<(u32, u32), Error> {
    let bad = || {
        Error::config(format!(
            "field `hours`: {text:?} is not a window like \"08:00-16:00\" (UTC, end excluded)"
        ))
    };
    let minute = |hhmm: &str| -> Option<u32> {
        let (h, m) = hhmm.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    };
    let (from, to) = text.split_once('-').ok_or_else(bad)?;
    let (from, to) = (minute(from).ok_or_else(bad)?, minute(to).ok_or_else(bad)?);
    if from == to {
        return Err(Error::config(format!(
            "field `hours`: {text:?} is an empty window; use \"00:00-24:00\" for the whole day"
        )));
    }
    Ok((from, to))
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Enforced, and nothing breaks the rules.
    Allowed,
    /// The environment is not enforced: the stage only reports.
    NotEnforced,
    /// Rules broken, let through by an override reason.
    Overridden,
    /// Rules broken, no override: the stage fails.
    Blocked,
}

/// What the policy decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The verdict.
    pub decision: Verdict,
    /// Whether the rules apply to this environment.
    pub enforced: bool,
    /// Whether the moment is inside the window.
    pub in_window: bool,
    /// Resources the plan destroys (deletes + replaces), when known.
    pub destroys: Option<u64>,
    /// What breaks the rules (empty when nothing does).
    pub violations: Vec<String>,
    /// The override reason, when one was given.
    pub override_reason: Option<String>,
    /// When it was decided (RFC 3339, UTC).
    pub checked_at: String,
}

/// Decide for `environment` at `now`. Pure: everything it depends on is
/// an argument, so every case is a unit test.
pub fn decide(
    config: &Config,
    environment: &str,
    now: Moment,
    override_reason: Option<String>,
) -> Result<Decision, Error> {
    let (from, to) = parse_hours(&config.hours)?;
    let in_hours = if from < to {
        (from..to).contains(&now.minute)
    } else {
        now.minute >= from || now.minute < to
    };
    let in_window = in_hours && config.days.contains(&now.weekday);
    let enforced = config.enforce_in.iter().any(|e| e == environment);
    let mut violations = Vec::new();
    if !in_window {
        violations.push(format!(
            "{} {} UTC is outside the change window ({} {})",
            now.weekday.name(),
            now.hhmm(),
            days_text(&config.days),
            config.hours.trim()
        ));
    }
    let destroys = config.plan_summary.as_ref().map(|s| s.delete + s.replace);
    if let (Some(summary), Some(destroys)) = (&config.plan_summary, destroys)
        && destroys > config.max_destroy
    {
        violations.push(format!(
            "the plan destroys {destroys} resource{} ({} delete, {} replace), more than max_destroy = {}",
            if destroys == 1 { "" } else { "s" },
            summary.delete,
            summary.replace,
            config.max_destroy
        ));
    }
    let override_reason = override_reason.filter(|r| !r.trim().is_empty());
    let decision = match (enforced, violations.is_empty(), &override_reason) {
        (false, _, _) => Verdict::NotEnforced,
        (true, true, _) => Verdict::Allowed,
        (true, false, Some(_)) => Verdict::Overridden,
        (true, false, None) => Verdict::Blocked,
    };
    Ok(Decision {
        decision,
        enforced,
        in_window,
        destroys,
        violations,
        override_reason,
        checked_at: now.rfc3339(),
    })
}

fn days_text(days: &[Weekday]) -> String {
    let all: Vec<&str> = Weekday::ALL
        .iter()
        .filter(|d| days.contains(d))
        .map(|d| &d.name()[..3])
        .collect();
    if all.is_empty() {
        "no day".into()
    } else {
        all.join(",")
    }
}

struct ChangeWindow;

impl Stage for ChangeWindow {
    type Config = Config;

    fn info() -> Info {
        Info::new("change-window", env!("CARGO_PKG_VERSION"))
            .description(
                "Blocks changes to enforced environments outside the change window or when \
                 the plan destroys too much, unless an override reason is given",
            )
            .env(
                OVERRIDE_ENV,
                "an operator's emergency override reason, given at run time \
                 (CHANGE_WINDOW_OVERRIDE='INC-123: hotfix' capstan run …)",
            )
    }

    fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // The env var is visible only when the pipeline grants it; unset is
        // the normal case.
        let reason = ctx
            .config
            .override_reason
            .clone()
            .filter(|r| !r.trim().is_empty())
            .or_else(|| std::env::var(OVERRIDE_ENV).ok());
        let d = decide(
            &ctx.config,
            &ctx.environment,
            Moment::from_unix(unix),
            reason,
        )?;
        let env = &ctx.environment;
        let problems = d.violations.join("; ");
        let summary = match d.decision {
            Verdict::Allowed => {
                format!("{env}: change allowed (in the window, within max_destroy)")
            }
            Verdict::NotEnforced if problems.is_empty() => {
                format!("{env} is not an enforced environment; the change would be allowed")
            }
            Verdict::NotEnforced => {
                format!(
                    "{env} is not an enforced environment; in one it would be blocked: {problems}"
                )
            }
            Verdict::Overridden => {
                let reason = d.override_reason.as_deref().unwrap_or_default();
                capstan_plugin::warn!(
                    "OVERRIDE of the change policy for {env} by reason {reason:?}: {problems}"
                );
                format!("{env}: change policy OVERRIDDEN ({reason}): {problems}")
            }
            Verdict::Blocked => {
                return Err(Error::failed(format!(
                    "{env} change blocked: {problems}. In an emergency, run again with \
                     {OVERRIDE_ENV}=\"<reason>\" (or set override_reason), which is recorded"
                )));
            }
        };
        capstan_plugin::info!("{summary}");
        Ok(Outcome::new(summary)
            .output("decision", d.decision)
            .output("enforced", d.enforced)
            .output("in_window", d.in_window)
            .output("destroys", d.destroys)
            .output("violations", &d.violations)
            .output("override_reason", &d.override_reason)
            .output("checked_at", &d.checked_at)
            .report(&d))
    }
}

capstan_plugin::export_stage!(ChangeWindow);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(with: serde_json::Value) -> Config {
        serde_json::from_value(with).unwrap()
    }

    /// 2026-11-26 is a Thursday.
    fn at(day: u64, hh: u64, mm: u64) -> Moment {
        let thursday = 1_795_651_200; // 2026-11-26T00:00:00Z
        Moment::from_unix(thursday + (day * 24 + hh) * 3600 + mm * 60)
    }

    #[test]
    fn moments() {
        assert_eq!(at(0, 10, 15).weekday, Weekday::Thu);
        assert_eq!(at(0, 10, 15).rfc3339(), "2026-11-26T10:15:00Z");
        assert_eq!(at(2, 22, 14).weekday, Weekday::Sat);
        assert_eq!(Moment::from_unix(0).weekday, Weekday::Thu);
        assert_eq!(Moment::from_unix(0).rfc3339(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn window_and_destroys_in_production() {
        let c =
            config(json!({"plan_summary": {"create": 1, "delete": 1, "replace": 1, "no_op": 3}}));
        let d = decide(&c, "production", at(2, 22, 14), None).unwrap();
        assert_eq!(d.decision, Verdict::Blocked);
        assert_eq!(
            d.violations,
            [
                "Saturday 22:14 UTC is outside the change window (Mon,Tue,Wed,Thu 08:00-16:00)",
                "the plan destroys 2 resources (1 delete, 1 replace), more than max_destroy = 0",
            ]
        );
        let c = config(json!({"plan_summary": {"create": 3, "update": 1}}));
        let d = decide(&c, "production", at(0, 10, 0), None).unwrap();
        assert_eq!(
            (d.decision, d.in_window, d.destroys),
            (Verdict::Allowed, true, Some(0))
        );
        // The end of the window is excluded.
        assert_eq!(
            decide(&c, "production", at(0, 16, 0), None)
                .unwrap()
                .decision,
            Verdict::Blocked
        );
    }

    #[test]
    fn override_and_other_environments() {
        let c = config(json!({}));
        let d = decide(&c, "production", at(2, 3, 0), Some("INC-42: hotfix".into())).unwrap();
        assert_eq!(d.decision, Verdict::Overridden);
        assert_eq!(d.override_reason.as_deref(), Some("INC-42: hotfix"));
        let d = decide(&c, "production", at(2, 3, 0), Some("  ".into())).unwrap();
        assert_eq!(d.decision, Verdict::Blocked, "a blank reason is no reason");
        let d = decide(&c, "dev", at(2, 3, 0), None).unwrap();
        assert_eq!((d.decision, d.enforced), (Verdict::NotEnforced, false));
        assert_eq!(d.violations.len(), 1);
    }

    #[test]
    fn windows_across_midnight_and_whole_days() {
        let c = config(json!({"hours": "22:00-02:00", "days": ["sat"]}));
        assert!(
            decide(&c, "production", at(2, 23, 0), None)
                .unwrap()
                .in_window
        );
        assert!(
            decide(&c, "production", at(2, 1, 59), None)
                .unwrap()
                .in_window
        );
        assert!(
            !decide(&c, "production", at(2, 2, 0), None)
                .unwrap()
                .in_window
        );
        let c = config(
            json!({"hours": "00:00-24:00", "days": ["mon","tue","wed","thu","fri","sat","sun"]}),
        );
        assert!(
            decide(&c, "production", at(3, 23, 59), None)
                .unwrap()
                .in_window
        );
    }

    #[test]
    fn bad_config_names_the_field() {
        for (hours, expected) in [
            ("8-16", "is not a window like"),
            ("08:00-25:00", "is not a window like"),
            ("10:00-10:00", "is an empty window"),
        ] {
            let c = config(json!({ "hours": hours }));
            let e = decide(&c, "production", at(0, 0, 0), None)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("invalid config: field `hours`"), "{e}");
            assert!(e.contains(expected), "{e}");
        }
        let e = serde_json::from_value::<Config>(json!({"days": ["funday"]})).unwrap_err();
        assert!(e.to_string().contains("unknown variant `funday`"), "{e}");
    }

    #[test]
    fn describe_asks_only_for_the_override_variable() {
        let info = ChangeWindow::info();
        assert_eq!(info.requests().len(), 1);
        assert_eq!(
            info.requests()[0].0,
            capstan_plugin::Capability::Env(OVERRIDE_ENV.into())
        );
    }
}
