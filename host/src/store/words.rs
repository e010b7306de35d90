//! The closed sets of words the run store keeps as text: run and stage
//! statuses, approval decisions and policies, run kinds, audit event kinds.
//! Code matches on these enums, never on their text; the text (kebab-case,
//! the same for serde, the database and messages) is what `--json`, the
//! database and `audit.jsonl` have always held.

use serde::{Deserialize, Serialize};

/// An enum of words: its text is its variants' names in kebab-case, the
/// same for serde and strum (`as_str`, `parse`, `Display`).
macro_rules! words {
    ($(#[$doc:meta])* pub enum $name:ident { $($(#[$vdoc:meta])* $variant:ident,)* }) => {
        $(#[$doc])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            Serialize,
            Deserialize,
            strum::IntoStaticStr,
            strum::EnumString,
            strum::VariantArray,
        )]
        #[serde(rename_all = "kebab-case")]
        #[strum(serialize_all = "kebab-case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                self.into()
            }

            pub fn parse(text: &str) -> Option<$name> {
                text.parse().ok()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words! {
    /// Why an environment's lock was released without its run's consent.
    pub enum Release {
        /// Its run had ended (or never recorded its start).
        Ended,
        /// Its host process on this machine died.
        HostDied,
        /// Its host (another machine) stopped renewing the lease.
        LeaseExpired,
        /// `capstan unlock --force`.
        Forced,
    }
}

words! {
    /// Why a run exists.
    pub enum RunKind {
        /// A run of the pipeline (`capstan run`).
        Deploy,
        /// `capstan rollback` or `on_failure = "rollback"`.
        Rollback,
        /// `capstan drift`: the plan stages only, changing nothing; never a
        /// good run to roll back to or reuse.
        Drift,
    }
}

words! {
    /// Where a run is in its life.
    pub enum RunState {
        Running,
        Succeeded,
        Failed,
        /// Paused at an approval; it keeps its environment lock.
        AwaitingApproval,
        /// Ended by a reviewer's rejection.
        Rejected,
        /// The host running it died (e.g. SIGKILL); `capstan resume` continues it.
        Interrupted,
        /// Ended by `capstan cancel` without finishing (and without a decision).
        Cancelled,
    }
}

impl RunState {
    /// Whether nothing more will happen to the run without someone acting.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Rejected | RunState::Cancelled
        )
    }
}

words! {
    /// Where one attempt of a stage is, or how it ended.
    pub enum StageState {
        Running,
        Succeeded,
        Failed,
        Skipped,
        AwaitingApproval,
        /// Its host died while it ran.
        Interrupted,
        /// A rollback's stage whose outputs come from the run it redeploys.
        Reused,
        Cancelled,
    }
}

impl StageState {
    /// Whether the stage finished with outputs that later stages can use
    /// (ran and succeeded here, or reused from another run).
    pub fn is_finished(self) -> bool {
        matches!(self, StageState::Succeeded | StageState::Reused)
    }
}

words! {
    /// A decision on an approval request.
    pub enum Decision {
        Approved,
        Rejected,
    }
}

words! {
    /// How a decision was made.
    pub enum ApprovalPolicy {
        /// A person, through the run store (`capstan approve`, `capstan reject`).
        Manual,
        /// The plugin's automatic policy (never in a protected environment).
        Automatic,
        /// Approved without review, with a reason.
        EmergencyOverride,
        /// A person, at the run's terminal prompt.
        Terminal,
    }
}

/// What an audit event is about: the capability used or denied, or what
/// the host did (`stage`, `run`, `limit`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, strum::AsRefStr, strum::EnumString)]
#[strum(serialize_all = "kebab-case")]
pub enum AuditKind {
    /// A program run, or refused.
    Exec,
    /// A program started: its pid and start time, to find it after a crash.
    ExecStarted,
    /// A program ended: its exit status.
    ExecExit,
    Connect,
    Approval,
    /// Secrets a stage received (names and how, never values), a secret
    /// that could not be resolved, or one found in a file a stage left.
    Secret,
    /// A stage started, ended or was cancelled.
    Stage,
    /// A limit (time, memory, output) ended a stage.
    Limit,
    /// Something that happened to the whole run (cancelled, cancel requested).
    Run,
    /// A kind this Capstan does not write (kept as recorded).
    #[strum(default, transparent)]
    Other(String),
}

impl AuditKind {
    pub fn as_str(&self) -> &str {
        self.as_ref()
    }

    pub fn parse(text: &str) -> AuditKind {
        text.parse().expect("unknown kinds parse as `Other`")
    }
}

impl std::fmt::Display for AuditKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AuditKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use strum::VariantArray;

    use super::*;

    /// serde (`--json`, run.json) and strum (the database, messages) write
    /// the same text, and it reads back.
    fn same_text<T>(all: &[T], as_str: fn(T) -> &'static str, parse: fn(&str) -> Option<T>)
    where
        T: Serialize + Copy + PartialEq + std::fmt::Debug,
    {
        for &word in all {
            assert_eq!(json!(word), json!(as_str(word)), "{word:?}");
            assert_eq!(parse(as_str(word)), Some(word));
        }
    }

    #[test]
    fn serde_and_the_store_write_the_same_words() {
        same_text(RunKind::VARIANTS, RunKind::as_str, RunKind::parse);
        same_text(RunState::VARIANTS, RunState::as_str, RunState::parse);
        same_text(StageState::VARIANTS, StageState::as_str, StageState::parse);
        same_text(Decision::VARIANTS, Decision::as_str, Decision::parse);
        same_text(
            ApprovalPolicy::VARIANTS,
            ApprovalPolicy::as_str,
            ApprovalPolicy::parse,
        );
    }

    #[test]
    fn words_are_the_ones_recorded_so_far() {
        let stages: Vec<&str> = StageState::VARIANTS.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            stages,
            [
                "running",
                "succeeded",
                "failed",
                "skipped",
                "awaiting-approval",
                "interrupted",
                "reused",
                "cancelled"
            ]
        );
        assert_eq!(
            ApprovalPolicy::EmergencyOverride.as_str(),
            "emergency-override"
        );
        assert_eq!(RunState::parse("waiting"), None);
    }

    #[test]
    fn audit_kinds_keep_unknown_text() {
        for (text, kind) in [
            ("exec", AuditKind::Exec),
            ("exec-started", AuditKind::ExecStarted),
            ("exec-exit", AuditKind::ExecExit),
            ("connect", AuditKind::Connect),
            ("approval", AuditKind::Approval),
            ("secret", AuditKind::Secret),
            ("stage", AuditKind::Stage),
            ("limit", AuditKind::Limit),
            ("run", AuditKind::Run),
            ("load", AuditKind::Other("load".into())),
        ] {
            assert_eq!(AuditKind::parse(text), kind);
            assert_eq!(kind.as_str(), text);
            assert_eq!(json!(kind), json!(text));
        }
    }
}
