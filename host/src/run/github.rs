//! Running inside GitHub Actions (`GITHUB_ACTIONS=true`): each stage's log
//! in a collapsible `::group::`, `::error`/`::warning` annotations (pipeline
//! errors at their file, line and column; failed stages and the warnings and
//! errors their plugins logged, at the stage in the pipeline file), a
//! Markdown job summary appended to `$GITHUB_STEP_SUMMARY`, and the run's id
//! and status in `$GITHUB_OUTPUT`.
//!
//! What a plugin or its programs wrote is untrusted: a line such as
//! `::add-mask::…` or `::set-output` must not become a workflow command.
//! Logs are printed between `::stop-commands::<random token>` and
//! `::<token>::`, and annotation texts and summary cells are escaped.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use crate::pipeline::diag::Diagnostics;
use crate::run::RunRecord;
use crate::run::stage::StageStatus;
use crate::store::{PendingApproval, RunState};
use crate::text::inline;

/// Annotations kept per stage and level: GitHub shows 10 of each per step.
const MAX_ANNOTATIONS: usize = 10;

/// Whether this process runs in a GitHub Actions job.
pub fn active() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// An annotation's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
}

impl Level {
    fn command(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
        }
    }
}

/// A place in a file, for an annotation.
#[derive(Debug, Clone, Default)]
pub struct Place {
    pub file: String,
    pub line: Option<usize>,
    pub col: Option<usize>,
}

/// `::error file=…,line=…,col=…,title=…::message`, escaped as GitHub's
/// toolkit does (properties: `%`, CR, LF, `:` and `,`; message: `%`, CR, LF).
pub fn annotation(level: Level, place: Option<&Place>, title: &str, message: &str) -> String {
    let mut props = Vec::new();
    if let Some(p) = place {
        props.push(format!("file={}", property(&p.file)));
        if let Some(line) = p.line {
            props.push(format!("line={line}"));
        }
        if let Some(col) = p.col {
            props.push(format!("col={col}"));
        }
    }
    props.push(format!("title={}", property(title)));
    format!(
        "::{} {}::{}",
        level.command(),
        props.join(","),
        data(message)
    )
}

fn data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn property(text: &str) -> String {
    data(text).replace(':', "%3A").replace(',', "%2C")
}

/// Plugins' warnings and errors, per stage, until the stage ends.
static LOGGED: OnceLock<Mutex<HashMap<String, Logged>>> = OnceLock::new();

/// What one stage's plugin logged at warn or error, in order.
type Logged = Vec<(Level, String)>;

/// A warning or error a plugin logged in `stage`: annotated when the stage
/// ends (the first [`MAX_ANNOTATIONS`] of each level).
pub fn logged(stage: &str, level: Level, message: &str) {
    if !active() {
        return;
    }
    let mut all = LOGGED
        .get_or_init(Default::default)
        .lock()
        .expect("annotations lock");
    let kept = all.entry(stage.to_string()).or_default();
    if kept.iter().filter(|(l, _)| *l == level).count() < MAX_ANNOTATIONS {
        kept.push((level, message.to_string()));
    }
}

/// How a stage ended, as the job log shows it.
pub struct StageEnd<'a> {
    pub stage: &'a str,
    /// The status line (`✓ plan (1.2s): …`), escaped.
    pub line: &'a str,
    /// The failure reason, if it failed.
    pub failed: Option<&'a str>,
    pub log: &'a Path,
    /// Where `[stages.<stage>]` is in the pipeline file.
    pub place: Place,
    /// Print the log (no `-q`).
    pub with_log: bool,
}

/// A stage ended: its log in a group, then its annotations.
pub fn stage_finished(end: &StageEnd) {
    let mut out = String::new();
    out.push_str(&format!("::group::{}\n", data(end.line)));
    if end.with_log {
        // A token nobody can guess ends the stretch without commands.
        let token = token();
        out.push_str(&format!("::stop-commands::{token}\n"));
        if let Ok(file) = std::fs::File::open(end.log) {
            for line in std::io::BufReader::new(file)
                .split(b'\n')
                .map_while(Result::ok)
            {
                out.push_str(&crate::text::block(&String::from_utf8_lossy(&line)));
                out.push('\n');
            }
        }
        out.push_str(&format!("::{token}::\n"));
    }
    out.push_str("::endgroup::\n");
    let logged = LOGGED
        .get()
        .and_then(|l| l.lock().ok()?.remove(end.stage))
        .unwrap_or_default();
    for (level, message) in logged {
        let title = format!("stage {}", end.stage);
        out.push_str(&annotation(
            level,
            Some(&end.place),
            &title,
            &inline(&message),
        ));
        out.push('\n');
    }
    if let Some(reason) = end.failed {
        let title = format!("stage {} failed", end.stage);
        out.push_str(&annotation(
            Level::Error,
            Some(&end.place),
            &title,
            &inline(reason),
        ));
        out.push('\n');
    }
    crate::run::progress::println(out.trim_end());
}

/// 128 random bits, hex: the end marker of a stretch without commands.
fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        // SipHash keys come from the OS's randomness too.
        for half in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::process::id().into());
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    format!("capstan-{}", hex::encode(bytes))
}

/// Pipeline errors as annotations at their file, line and column.
pub fn diagnostics(d: &Diagnostics) -> String {
    d.0.iter()
        .map(|d| {
            let place = Place {
                file: d.file.display().to_string(),
                line: d.location.map(|(line, _)| line),
                col: d.location.map(|(_, col)| col),
            };
            let mut message = d.message.clone();
            if let Some(help) = &d.help {
                message.push_str(&format!("\nhelp: {help}"));
            }
            annotation(
                Level::Error,
                Some(&place),
                "capstan: invalid pipeline",
                &message,
            ) + "\n"
        })
        .collect()
}

/// Append `text` to the file named by `variable` (`$GITHUB_STEP_SUMMARY`,
/// `$GITHUB_OUTPUT`), if set; a failure is a warning, never the run's.
pub fn append(variable: &str, text: &str) {
    let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) else {
        return;
    };
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "warning: cannot append to ${variable} ({}): {e}",
            Path::new(&path).display()
        );
    }
}

/// Text from a plugin as inert Markdown inside a table cell or a line:
/// one line, escaped (no HTML, links, emphasis or cell breaks).
pub fn markdown(text: &str) -> String {
    let mut out = String::new();
    for c in inline(text).chars() {
        if "\\`*_{}[]()<>#+-.!|~&".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The job summary and step outputs of a run that ended (or paused):
/// appended to `$GITHUB_STEP_SUMMARY` and `$GITHUB_OUTPUT`.
pub fn finished(record: &RunRecord, waiting: Option<&PendingApproval>) {
    append("GITHUB_STEP_SUMMARY", &summary(record, waiting));
    append(
        "GITHUB_OUTPUT",
        &format!(
            "run-id={}\nstatus={}\n",
            record.run_id,
            record.status.as_str()
        ),
    );
}

/// The job summary in Markdown.
pub fn summary(record: &RunRecord, waiting: Option<&PendingApproval>) -> String {
    let id = &record.run_id;
    let (icon, verdict) = match record.status {
        RunState::Succeeded => ("✅", "succeeded"),
        RunState::AwaitingApproval => ("⏸️", "is waiting for approval"),
        RunState::Rejected => ("⛔", "was rejected"),
        RunState::Cancelled => ("⏹️", "was cancelled"),
        _ => ("❌", "failed"),
    };
    let mut md = format!(
        "### {icon} capstan: `{}` {verdict} in `{}`\n\nrun `{id}` · {:.1}s · by {}\n\n\
         | stage | status | time | summary |\n| --- | --- | --- | --- |\n",
        markdown(&record.pipeline),
        markdown(&record.environment),
        record.duration_ms as f64 / 1000.0,
        markdown(&record.author),
    );
    for s in &record.stages {
        let (status, text) = match &s.status {
            StageStatus::Succeeded { summary, .. } => ("✅ succeeded", summary),
            StageStatus::Failed { reason } => ("❌ **failed**", reason),
            StageStatus::Skipped { reason } => ("⏭️ skipped", reason),
            StageStatus::AwaitingApproval { reason } => ("⏸️ **waiting**", reason),
            StageStatus::Cancelled { reason } => ("⏹️ cancelled", reason),
        };
        let time = s
            .duration_ms
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        md.push_str(&format!(
            "| {} | {status} | {time} | {} |\n",
            markdown(&s.name),
            markdown(&crate::text::one_line(text, 200))
        ));
    }
    if let Some(w) = waiting {
        md.push_str(&format!(
            "\n#### Waiting for approval: stage `{}`\n\n{} — digest `{}`, {} approval(s) required\n",
            markdown(&w.stage),
            markdown(&w.subject),
            markdown(&w.digest),
            w.required.max(1)
        ));
        if !w.details.trim().is_empty() {
            // A fence longer than any run of backticks in the text keeps it a
            // code block, whatever the plugin wrote.
            let longest = w
                .details
                .split(|c| c != '`')
                .map(str::len)
                .max()
                .unwrap_or(0);
            let fence = "`".repeat(longest.max(2) + 1);
            md.push_str(&format!(
                "\n{fence}text\n{}\n{fence}\n",
                crate::text::block(w.details.trim_end())
            ));
        }
        md.push_str(&format!(
            "\nReview with `capstan show {id}`, approve with `capstan approve {id}` \
             (another person than the run's author), then continue with `capstan resume {id}`; \
             or `capstan reject {id} --comment \"…\"`.\n"
        ));
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_escape_their_properties_and_message() {
        let place = Place {
            file: "a,b:c.toml".into(),
            line: Some(3),
            col: Some(7),
        };
        assert_eq!(
            annotation(Level::Error, Some(&place), "t: x", "50% done\nnext"),
            "::error file=a%2Cb%3Ac.toml,line=3,col=7,title=t%3A x::50%25 done%0Anext"
        );
        assert_eq!(
            annotation(Level::Warning, None, "w", "m"),
            "::warning title=w::m"
        );
    }

    #[test]
    fn markdown_from_plugins_is_inert() {
        assert_eq!(
            markdown("a|b <img src=x> [click](http://x) *em*\nline"),
            r"a\|b \<img src=x\> \[click\]\(http://x\) \*em\*\\nline"
        );
    }
}
