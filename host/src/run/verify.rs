//! Whether a run's records are as they were written (`capstan verify`),
//! from its run directory and the run store alone: the audit log's hash
//! chain and the head the store keeps, the pipeline and plugin digests
//! (store, `run.json`, each stage's start record), and that every plan a
//! stage applied is the one approved.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::caps::approval::{Asked, Identity, Recorded, Trust, identify, recorded, short};
use crate::caps::audit::{chain, reconcile};
use crate::store::{
    ApprovalPolicy, Decision, RunRow, RunState, RunStore, StoreError, latest_attempts,
};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    Failed,
    /// Nothing to check it against (yet).
    NotChecked,
}

/// One check: what it found, and for a failure the first broken link.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub outcome: Outcome,
    /// The file the broken link is in, and its line (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub detail: String,
}

impl Check {
    fn ok(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            check,
            outcome: Outcome::Ok,
            file: None,
            line: None,
            detail: detail.into(),
        }
    }

    fn failed(check: &'static str, at: Option<(&Path, usize)>, detail: impl Into<String>) -> Check {
        Check {
            check,
            outcome: Outcome::Failed,
            file: at.map(|(f, _)| f.display().to_string()),
            line: at.map(|(_, l)| l).filter(|&l| l > 0),
            detail: detail.into(),
        }
    }

    fn not_checked(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            outcome: Outcome::NotChecked,
            ..Check::ok(check, detail)
        }
    }
}

/// Every check of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: String,
    pub verified: bool,
    pub checks: Vec<Check>,
}

/// The run's files as read.
struct Files {
    audit_path: PathBuf,
    /// `audit.jsonl`, or why it cannot be read.
    audit: Result<Vec<u8>, String>,
    record_path: PathBuf,
    /// `run.json`: `None` where it is not written yet.
    record: Result<Option<Value>, String>,
    outputs_path: PathBuf,
    outputs: Option<Value>,
    /// Every complete line of `audit.jsonl` that is a JSON object, with its
    /// number (broken ones are the chain's to report).
    events: Vec<(usize, Value)>,
}

impl Files {
    fn read(run: &RunRow) -> Files {
        let dir = Path::new(&run.run_dir);
        let audit_path = dir.join("audit.jsonl");
        let audit = match std::fs::read(&audit_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && run.audit_head.is_none() => {
                Ok(Vec::new())
            }
            r => r.map_err(|e| format!("cannot read it: {e}")),
        };
        let events = audit
            .as_deref()
            .unwrap_or_default()
            .split(|&b| b == b'\n')
            .enumerate()
            .filter_map(|(i, l)| Some((i + 1, serde_json::from_slice(l).ok()?)))
            .collect();
        let record_path = dir.join("run.json");
        let record = match std::fs::read(&record_path) {
            // run.json is written when the run ends or pauses.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && matches!(run.status, RunState::Running | RunState::Interrupted) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("cannot read it: {e}")),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("is not JSON (line {}: {e})", e.line())),
        };
        let outputs_path = dir.join("outputs.json");
        let outputs = std::fs::read(&outputs_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        Files {
            audit_path,
            audit,
            record_path,
            record,
            outputs_path,
            outputs,
            events,
        }
    }

    /// Stage start records: line, stage, plugin, detail.
    fn starts(&self) -> impl Iterator<Item = (usize, &str, &str, &Value)> {
        self.events
            .iter()
            .filter(|(_, e)| e["capability"] == "stage" && e["detail"]["event"] == "start")
            .map(|(n, e)| {
                (
                    *n,
                    e["stage"].as_str().unwrap_or("?"),
                    e["plugin"].as_str().unwrap_or("?"),
                    &e["detail"],
                )
            })
    }
}

/// Check `run` against its run directory and the run store.
pub fn verify(run: &RunRow, store: &dyn RunStore) -> Result<Report, StoreError> {
    let files = Files::read(run);
    let stored = store.audit_events(&run.id)?.len();
    let mut checks = chain_checks(run, &files, stored);
    checks.push(pipeline_digest(run, &files));
    checks.push(plugin_digests(run, &files));
    checks.push(approvals(run, store, &files)?);
    checks.push(signatures(run, store)?);
    Ok(Report {
        run: run.id.clone(),
        verified: checks.iter().all(|c| c.outcome != Outcome::Failed),
        checks,
    })
}

/// The chain, line by line, and the head the store keeps.
/// `stored`: how many events the run store holds for the run.
fn chain_checks(run: &RunRow, files: &Files, stored: usize) -> Vec<Check> {
    let path = &files.audit_path;
    let bytes = match &files.audit {
        Ok(bytes) => bytes,
        Err(e) => {
            return vec![
                Check::failed("audit chain", Some((path, 0)), e.clone()),
                Check::not_checked("audit head", "no audit log to find it in"),
            ];
        }
    };
    let walk = chain::walk(&run.id, bytes);
    let mut notes = Vec::new();
    for (line, bytes) in &walk.repairs {
        notes.push(format!(
            "line {line} records cutting off a torn line of {bytes} bytes (a host stopped while writing it)"
        ));
    }
    for (line, e) in run_events(files, reconcile::RECONCILED) {
        let lines = &e["detail"]["lines"];
        notes.push(format!(
            "line {line} records that lines {}–{} were recorded in the run store late (a host stopped between writing and recording them)",
            lines[0], lines[1]
        ));
    }
    if let Some(torn) = walk.torn {
        notes.push(format!(
            "the last {torn} bytes are a torn line (the host stopped while writing it; a resume cuts it off and records that)"
        ));
    }
    let chain = match &walk.broken {
        Some(b) => Check::failed(
            "audit chain",
            Some((path, b.line)),
            format!("line {} {}", b.line, b.what),
        ),
        None => Check::ok(
            "audit chain",
            format!(
                "{} lines, each chained to the one before{}",
                walk.lines,
                with_notes(&notes)
            ),
        ),
    };
    let found = run
        .audit_head
        .as_ref()
        .map(|head| walk.hashes.iter().position(|h| h == head));
    let head = match (found, &walk.broken) {
        (None, _) if walk.lines == 0 => Check::ok("audit head", "no events recorded"),
        (None, _) if stored == 0 => Check::ok(
            "audit head",
            format!(
                "the run store has recorded none of the {} lines yet (a host stopped between writing \
                 the first and recording it; the next writer of the log records them)",
                walk.lines
            ),
        ),
        (None, _) => Check::failed(
            "audit head",
            None,
            "the run store records no head for this run's audit log (it ran before Capstan chained audit logs)",
        ),
        (Some(Some(i)), _) if i + 1 == walk.lines => Check::ok(
            "audit head",
            format!("the run store's head is line {} (the last)", i + 1),
        ),
        (Some(Some(i)), _) => Check::ok(
            "audit head",
            format!(
                "the run store's head is line {}; {} lines after it were not recorded in the store \
                 (the host stopped before recording them)",
                i + 1,
                walk.lines - i - 1
            ),
        ),
        (Some(None), Some(b)) => Check::not_checked(
            "audit head",
            format!(
                "the run store's head is not in the chain before line {}, where it breaks",
                b.line
            ),
        ),
        (Some(None), None) => Check::failed(
            "audit head",
            Some((path, walk.lines)),
            format!(
                "the run store's head ({}) is no line of the file: lines were removed from its end, or the file was replaced",
                short(run.audit_head.as_deref().unwrap_or_default())
            ),
        ),
    };
    // A cut found and recorded by a later writer: the file's end is the
    // head again, but lines are missing all the same.
    let head = match run_events(files, reconcile::CUT).next() {
        Some((line, e)) => Check::failed(
            "audit head",
            Some((path, line)),
            format!(
                "line {line} records that the file was cut: the run store's head then ({}) was no line of it \
                 (lines were removed from its end, or the file was replaced); the store held {} events, the \
                 file {} lines",
                short(e["detail"]["store_head"].as_str().unwrap_or_default()),
                e["detail"]["store_events"],
                e["detail"]["file_lines"]
            ),
        ),
        None => head,
    };
    vec![chain, head]
}

/// Capstan's own `run` records of `event` in the audit log: line, record.
fn run_events<'a>(files: &'a Files, event: &'a str) -> impl Iterator<Item = (usize, &'a Value)> {
    files
        .events
        .iter()
        .filter(move |(_, e)| e["capability"] == "run" && e["detail"]["event"] == event)
        .map(|(n, e)| (*n, e))
}

/// `n thing(s)`.
fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

fn with_notes(notes: &[String]) -> String {
    if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    }
}

/// The store's pipeline digest in `run.json` and every stage's start record.
fn pipeline_digest(run: &RunRow, files: &Files) -> Check {
    const CHECK: &str = "pipeline digest";
    let want = &run.pipeline_digest;
    match &files.record {
        Err(e) => return Check::failed(CHECK, Some((&files.record_path, 0)), e.clone()),
        Ok(Some(record)) if record["pipeline_digest"].as_str() != Some(want) => {
            return Check::failed(
                CHECK,
                Some((&files.record_path, 0)),
                format!(
                    "run.json has pipeline_digest {}, the run store {want}",
                    record["pipeline_digest"]
                ),
            );
        }
        Ok(_) => {}
    }
    let mut starts = 0;
    for (line, stage, _, detail) in files.starts() {
        starts += 1;
        if detail["pipeline_digest"].as_str() != Some(want) {
            return Check::failed(
                CHECK,
                Some((&files.audit_path, line)),
                format!(
                    "the start of stage `{stage}` has pipeline_digest {}, the run store {want}",
                    detail["pipeline_digest"]
                ),
            );
        }
    }
    let json = if matches!(files.record, Ok(Some(_))) {
        "run.json, "
    } else {
        ""
    };
    Check::ok(
        CHECK,
        format!(
            "{} in the run store, {json}{}",
            short(want),
            count(starts, "stage start")
        ),
    )
}

/// The plugins' digests: the store's, `run.json`'s, and each stage start's.
fn plugin_digests(run: &RunRow, files: &Files) -> Check {
    const CHECK: &str = "plugin digests";
    let digests = |v: &Value| -> Vec<(String, String)> {
        let mut list: Vec<(String, String)> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let text = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                (text("name"), text("sha256"))
            })
            .collect();
        list.sort();
        list
    };
    let stored = digests(&run.plugins);
    if let Ok(Some(record)) = &files.record {
        let recorded = digests(&record["plugins"]);
        if recorded != stored {
            let differs = stored
                .iter()
                .chain(&recorded)
                .find(|p| !stored.contains(p) || !recorded.contains(p))
                .map_or("?", |(name, _)| name.as_str());
            return Check::failed(
                CHECK,
                Some((&files.record_path, 0)),
                format!("run.json and the run store differ on plugin `{differs}`"),
            );
        }
    }
    let mut starts = 0;
    for (line, stage, plugin, detail) in files.starts() {
        starts += 1;
        let want = stored.iter().find(|(n, _)| n == plugin).map(|(_, d)| d);
        let have = detail["plugin_digest"].as_str();
        if want.map(String::as_str) != have {
            return Check::failed(
                CHECK,
                Some((&files.audit_path, line)),
                format!(
                    "the start of stage `{stage}` has plugin `{plugin}` at sha256 {}, the run store {}",
                    have.unwrap_or("(none)"),
                    want.map_or("(no such plugin)", String::as_str)
                ),
            );
        }
    }
    Check::ok(
        CHECK,
        format!(
            "{}: the run store, {}{} agree",
            count(stored.len(), "plugin"),
            if matches!(files.record, Ok(Some(_))) {
                "run.json, "
            } else {
                ""
            },
            count(starts, "stage start")
        ),
    )
}

/// Every plan digest a stage applied (its `applied_digest` output) was
/// approved: in the store's approvals, as the request required, and in the
/// audit log.
fn approvals(run: &RunRow, store: &dyn RunStore, files: &Files) -> Result<Check, StoreError> {
    const CHECK: &str = "approved plans";
    let trust = match Trust::of_run(run) {
        Ok(trust) => trust,
        Err(e) => return Ok(Check::failed(CHECK, None, e)),
    };
    let decisions = store.approvals(&run.id)?;
    let requests = store.approval_requests(&run.id)?;
    let mut applied = Vec::new();
    for stage in latest_attempts(store.stages(&run.id)?) {
        let Some(digest) = stage.outputs["applied_digest"].as_str() else {
            continue;
        };
        if let Some(outputs) = &files.outputs {
            let file = outputs[&stage.name]["applied_digest"].as_str();
            if file != Some(digest) {
                return Ok(Check::failed(
                    CHECK,
                    Some((&files.outputs_path, 0)),
                    format!(
                        "outputs.json has stage `{}` applying {}, the run store {digest}",
                        stage.name,
                        file.unwrap_or("nothing")
                    ),
                ));
            }
        }
        let approving: Vec<_> = decisions
            .iter()
            .filter(|d| d.digest == digest && d.decision == Decision::Approved)
            .collect();
        let Some(first) = approving.first() else {
            return Ok(Check::failed(
                CHECK,
                None,
                format!(
                    "stage `{}` applied {digest}, which no recorded approval approves",
                    stage.name
                ),
            ));
        };
        // Manual approvals count as the request required (approvers, how
        // many, not the author); an automatic or emergency one stands alone.
        let alone = approving.iter().any(|d| {
            matches!(
                d.policy,
                ApprovalPolicy::Automatic | ApprovalPolicy::EmergencyOverride
            )
        });
        if !alone
            && let Some(request) = requests
                .iter()
                .find(|r| r.digest == digest && r.stage == first.stage)
            && let Recorded::Open { approved_by, .. } = recorded(
                &decisions,
                Asked {
                    stage: &request.stage,
                    digest,
                    image: request.image_digest.as_deref(),
                    approvers: &request.approvers,
                    required: request.required,
                },
                &trust,
            )
        {
            return Ok(Check::failed(
                CHECK,
                None,
                format!(
                    "stage `{}` applied {digest}, approved by {} of the {} approvals stage `{}` required",
                    stage.name,
                    approved_by.len(),
                    request.required.max(1),
                    request.stage
                ),
            ));
        }
        let in_log = files.events.iter().any(|(_, e)| {
            e["capability"] == "approval"
                && e["detail"]["digest"] == digest
                && e["detail"]["decision"] == "approved"
        });
        if !in_log {
            return Ok(Check::failed(
                CHECK,
                Some((&files.audit_path, 0)),
                format!(
                    "the run store approves {digest}, applied by stage `{}`, but audit.jsonl records no such approval",
                    stage.name
                ),
            ));
        }
        let by: Vec<&str> = approving.iter().map(|d| d.by.as_str()).collect();
        applied.push(format!(
            "stage `{}` applied {} approved by {}",
            stage.name,
            short(digest),
            by.join(", ")
        ));
    }
    Ok(if applied.is_empty() {
        Check::ok(CHECK, "no stage applied a plan")
    } else {
        Check::ok(CHECK, applied.join("; "))
    })
}

/// Every human decision of a run that lists approvers' keys is signed by a
/// listed key, other than the author's, over the statement its row makes
/// (run, pipeline, environment, stage, digest, image, decision, time).
fn signatures(run: &RunRow, store: &dyn RunStore) -> Result<Check, StoreError> {
    const CHECK: &str = "signatures";
    let trust = match Trust::of_run(run) {
        Ok(trust) => trust,
        Err(e) => return Ok(Check::failed(CHECK, None, e)),
    };
    let decisions = store.approvals(&run.id)?;
    let requests = store.approval_requests(&run.id)?;
    let human: Vec<_> = decisions
        .iter()
        .filter(|d| d.policy != ApprovalPolicy::Automatic)
        .collect();
    if !trust.signed() {
        return Ok(Check::ok(
            CHECK,
            format!(
                "the run lists no approvers' keys: {} recorded by name only (identity not verified)",
                count(human.len(), "human decision")
            ),
        ));
    }
    let mut verified = Vec::new();
    let mut policy = 0;
    for (i, d) in human.iter().enumerate() {
        // A plugin's override (outside protected environments) is a
        // policy's decision, like an automatic one: unsigned by design;
        // `capstan approve --emergency` signs when keys are listed.
        if d.policy == ApprovalPolicy::EmergencyOverride && d.signature.is_none() {
            policy += 1;
            continue;
        }
        let image = requests
            .iter()
            .find(|r| r.stage == d.stage && r.digest == d.digest)
            .and_then(|r| r.image_digest.as_deref());
        match identify(&trust, d, image) {
            Identity::Verified(p) => verified.push(p),
            Identity::Refused(why) => {
                return Ok(Check::failed(
                    CHECK,
                    None,
                    format!(
                        "decision {} ({} of stage `{}` by {} at {}): {why}",
                        i + 1,
                        d.decision.as_str(),
                        d.stage,
                        crate::text::inline(&d.by),
                        d.at
                    ),
                ));
            }
            Identity::Unverified => unreachable!("the run lists keys"),
        }
    }
    let mut detail = format!(
        "{} signed by listed approvers ({})",
        count(verified.len(), "decision"),
        verified.join(", ")
    );
    if policy > 0 {
        detail.push_str(&format!(
            "; {} by a plugin's policy, unsigned",
            count(policy, "emergency override")
        ));
    }
    Ok(Check::ok(CHECK, detail))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::caps::audit::AuditLog;
    use crate::run::testing::Runs;
    use crate::store::{ApprovalRow, AuditKind, PendingApproval, StageRow, StageState};

    fn approved_plans(runs: &Runs, run: &str) -> Check {
        let row = runs.store.run(run).unwrap();
        let report = verify(&row, runs.store.as_ref()).unwrap();
        report
            .checks
            .into_iter()
            .find(|c| c.check == "approved plans")
            .unwrap()
    }

    #[test]
    fn a_plan_applied_counts_only_with_the_approvals_its_request_required() {
        let runs = Runs::new();
        let run = runs.run("r", RunState::Succeeded);
        let log = AuditLog::open(
            &Path::new(&run.run_dir).join("audit.jsonl"),
            runs.store.clone(),
            "r",
        )
        .unwrap();
        let apply = StageRow {
            name: "apply".into(),
            attempt: 1,
            plugin: "terraform".into(),
            status: StageState::Succeeded,
            message: String::new(),
            outputs: json!({ "applied_digest": "D" }),
            artifacts: json!([]),
            report: None,
            started: None,
            ended: None,
            duration_ms: None,
        };
        runs.store.end_stage("r", Some(1), &apply).unwrap();
        let check = approved_plans(&runs, "r");
        assert_eq!(check.outcome, Outcome::Failed, "{check:?}");
        assert!(check.detail.contains("no recorded approval"), "{check:?}");

        let approval = |by: &str| ApprovalRow {
            stage: "approve".into(),
            digest: "D".into(),
            decision: Decision::Approved,
            by: by.into(),
            at: "t".into(),
            comment: None,
            policy: ApprovalPolicy::Manual,
            override_reason: None,
            signature: None,
        };
        runs.store.record_approval("r", &approval("bob")).unwrap();
        // The store approves it, the audit log does not say so.
        let check = approved_plans(&runs, "r");
        assert!(
            check
                .detail
                .contains("audit.jsonl records no such approval"),
            "{check:?}"
        );
        log.record(
            "approve",
            "approval",
            AuditKind::Approval,
            true,
            json!({ "digest": "D", "decision": "approved", "by": ["bob"] }),
            None,
        );
        let check = approved_plans(&runs, "r");
        assert_eq!(check.outcome, Outcome::Ok, "{check:?}");
        assert_eq!(check.detail, "stage `apply` applied D approved by bob");

        // The request needed two people.
        let request = PendingApproval {
            stage: "approve".into(),
            digest: "D".into(),
            subject: "plan".into(),
            details: String::new(),
            checklist: vec![],
            approvers: vec![],
            required: 2,
            asked: "t".into(),
            image_digest: None,
        };
        runs.store.record_request("r", &request).unwrap();
        let check = approved_plans(&runs, "r");
        assert!(
            check.detail.contains("approved by 1 of the 2 approvals"),
            "{check:?}"
        );
        runs.store.record_approval("r", &approval("carol")).unwrap();
        assert_eq!(approved_plans(&runs, "r").outcome, Outcome::Ok);
    }
}
