//! Packer's `-machine-readable` output: one record a line,
//! `timestamp,target,type,data...`, where commas inside data are written as
//! `%!(PACKER_COMMA)` and newlines as a literal `\n`.
//!
//! The record types the plugin uses (Packer 1.6, documented in Packer's
//! "Machine-Readable Output" page):
//!
//! - `ui` (`say`, `message`, `error`): what the human UI would print;
//!   provisioner output arrives as `ui,message`, failures as `ui,error`;
//! - `artifact-count` / `artifact,<index>,<subtype>,...` (`builder-id`, `id`,
//!   `string`, `files-count`, `file,<n>,<path>`, `end`) for each build target;
//! - `error-count`, and `error` with the build name as target.
//!
//! Lines that are not records (a panic, a plugin writing straight to
//! stdout) are kept as [`Parsed::other`] so that error messages can still
//! show them.

use std::collections::BTreeMap;

/// One `timestamp,target,type,data...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Unix time in seconds.
    pub timestamp: u64,
    /// The build name, or empty for messages about the whole run.
    pub target: String,
    /// `ui`, `artifact`, `artifact-count`, `error`, `error-count`, ...
    pub kind: String,
    /// The remaining fields, unescaped.
    pub data: Vec<String>,
}

/// A whole machine-readable output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The records, in order.
    pub records: Vec<Record>,
    /// Non-blank lines that are not records.
    pub other: Vec<String>,
}

/// One artifact of one build, from its `artifact,<index>,...` records.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Artifact {
    /// The build (record target) that produced it.
    pub build: String,
    /// Its index among the build's artifacts.
    pub index: u32,
    /// `builder-id`, e.g. `fnoeding.null`, `mitchellh.amazonebs`.
    pub builder_id: String,
    /// `id`, e.g. `us-east-1:ami-0abc`, or `Null` for the null builder.
    pub id: String,
    /// `string`: the human description.
    pub description: String,
    /// `file` entries.
    pub files: Vec<String>,
}

/// Undo Packer's escaping of one data field: `%!(PACKER_COMMA)` is a
/// comma, `\n` a newline and `\r` a carriage return.
pub fn unescape(field: &str) -> String {
    const COMMA: &str = "%!(PACKER_COMMA)";
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix(COMMA) {
            out.push(',');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("\\n") {
            out.push('\n');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("\\r") {
            out.push('\r');
            rest = after;
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Parse one line; `None` when it is not a record.
pub fn parse_line(line: &str) -> Option<Record> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = line.split(',');
    let timestamp = fields.next()?;
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let timestamp = timestamp.parse().ok()?;
    let target = fields.next()?;
    let kind = fields.next()?;
    if kind.is_empty() {
        return None;
    }
    Some(Record {
        timestamp,
        target: unescape(target),
        kind: kind.to_string(),
        data: fields.map(unescape).collect(),
    })
}

/// Parse a whole output.
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for line in text.lines() {
        match parse_line(line) {
            Some(record) => parsed.records.push(record),
            None if !line.trim().is_empty() => parsed.other.push(line.trim_end().to_string()),
            None => {}
        }
    }
    parsed
}

impl Parsed {
    /// The `ui` records of subtype `level` (`say`, `message`, `error`).
    pub fn ui(&self, level: &str) -> impl Iterator<Item = &str> {
        let level = level.to_string();
        self.records
            .iter()
            .filter(move |r| r.kind == "ui" && r.data.first().is_some_and(|l| *l == level))
            .map(|r| r.data.get(1).map_or("", String::as_str))
    }

    /// Every artifact, in the order Packer reported them.
    pub fn artifacts(&self) -> Vec<Artifact> {
        let mut out: Vec<Artifact> = Vec::new();
        for r in self.records.iter().filter(|r| r.kind == "artifact") {
            let Some(index) = r.data.first().and_then(|i| i.parse::<u32>().ok()) else {
                continue;
            };
            let pos = match out
                .iter()
                .position(|a| a.build == r.target && a.index == index)
            {
                Some(pos) => pos,
                None => {
                    out.push(Artifact {
                        build: r.target.clone(),
                        index,
                        ..Artifact::default()
                    });
                    out.len() - 1
                }
            };
            let artifact = &mut out[pos];
            let value = |i: usize| r.data.get(i).cloned().unwrap_or_default();
            match r.data.get(1).map(String::as_str) {
                Some("builder-id") => artifact.builder_id = value(2),
                Some("id") => artifact.id = value(2),
                Some("string") => artifact.description = value(2),
                // `file,<n>,<path>`
                Some("file") => artifact.files.push(value(3)),
                _ => {}
            }
        }
        out
    }

    /// Packer's own error lines: every `ui,error` message (split into
    /// non-blank lines), then each `error` record not already shown,
    /// prefixed with its build. Falls back to lines that are not records
    /// (e.g. a crash) when there are no error records at all.
    pub fn errors(&self) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for message in self.ui("error") {
            lines.extend(
                message
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
        for r in self.records.iter().filter(|r| r.kind == "error") {
            let message = r.data.join(",");
            let first = message.lines().map(str::trim).find(|l| !l.is_empty());
            if first.is_some_and(|f| lines.iter().any(|l| l.contains(f))) {
                continue;
            }
            for line in message.lines().map(str::trim).filter(|l| !l.is_empty()) {
                lines.push(if r.target.is_empty() {
                    line.to_string()
                } else {
                    format!("{}: {line}", r.target)
                });
            }
        }
        if lines.is_empty() {
            lines.extend(self.other.iter().cloned());
        }
        lines
    }

    /// Name/version pairs printed by a provisioner on a `ui,message` line
    /// after `marker` (e.g. `capstan-software:`), either as space-separated
    /// `name=version` pairs or as one JSON object. Later lines win.
    pub fn software(&self, marker: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if marker.is_empty() {
            return out;
        }
        for message in self.ui("message").chain(self.ui("say")) {
            for line in message.lines() {
                if let Some((_, rest)) = line.split_once(marker) {
                    out.extend(parse_pairs(rest.trim()));
                }
            }
        }
        out
    }
}

/// `a=1 b=2` or `{"a": "1", "b": 2}` as name/version pairs.
fn parse_pairs(text: &str) -> Vec<(String, String)> {
    if text.starts_with('{') {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str(text) else {
            return Vec::new();
        };
        return map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect();
    }
    text.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TESTDATA: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/golden-image/packer/testdata/"
    );

    fn sample(name: &str) -> String {
        std::fs::read_to_string(format!("{TESTDATA}{name}"))
            .unwrap_or_else(|e| panic!("{TESTDATA}{name}: {e}"))
    }

    #[test]
    fn unescapes_commas_and_newlines() {
        assert_eq!(unescape("a%!(PACKER_COMMA) b"), "a, b");
        assert_eq!(unescape("Error: \\n\\n* x\\r"), "Error: \n\n* x\r");
        assert_eq!(unescape("%!(PACKER_COMMA)%!(PACKER_COMMA)"), ",,");
        assert_eq!(unescape("%!(PACKER_COMM"), "%!(PACKER_COMM");
        assert_eq!(unescape("é\\"), "é\\");
    }

    #[test]
    fn parses_records_and_keeps_other_lines() {
        let p = parse(
            "1795653984,,ui,say,hello%!(PACKER_COMMA) world\n\
             panic: something\n\
             \n\
             1795653984,golden-image,artifact,0,id,Null\r\n\
             12,x\n\
             abc,,ui,say,x\n",
        );
        assert_eq!(p.records.len(), 2);
        assert_eq!(
            p.records[0],
            Record {
                timestamp: 1795653984,
                target: String::new(),
                kind: "ui".into(),
                data: vec!["say".into(), "hello, world".into()],
            }
        );
        assert_eq!(p.records[1].data, ["0", "id", "Null"]);
        assert_eq!(p.other, ["panic: something", "12,x", "abc,,ui,say,x"]);
    }

    #[test]
    fn real_successful_build() {
        let p = parse(&sample("build-machine-readable.txt"));
        assert!(p.other.is_empty(), "{:?}", p.other);
        let artifacts = p.artifacts();
        assert_eq!(artifacts.len(), 2);
        assert_eq!(
            artifacts[0],
            Artifact {
                build: "golden-image".into(),
                index: 0,
                builder_id: "fnoeding.null".into(),
                id: "Null".into(),
                description: "Did not export anything. This is the null builder".into(),
                files: vec![],
            }
        );
        assert!(p.errors().is_empty());
        let software = p.software("capstan-software:");
        // Measured on the machine that made the sample: shapes, not values.
        assert!(software["python3"].starts_with("3."), "{software:?}");
        assert_eq!(software["healthcheck"], "1.0.0");
        assert_eq!(software.len(), 6);
        assert!(software.values().all(|v| !v.is_empty() && v != "unknown"));
        assert!(p.software("").is_empty());
        assert!(p.software("nothing-here:").is_empty());
    }

    #[test]
    fn real_provisioner_error() {
        let p = parse(&sample("build-machine-readable-error-provisioner.txt"));
        assert!(p.artifacts().is_empty());
        let errors = p.errors();
        assert_eq!(
            errors[0],
            "==> golden-image: bake: error: image_name '../escape' must be letters, digits, '.', '_' or '-' and not start with '.'"
        );
        assert!(
            errors[1].starts_with("Build 'golden-image' errored after"),
            "{errors:?}"
        );
        // The `error` record repeats a `ui,error` line: not shown twice.
        assert_eq!(
            errors
                .iter()
                .filter(|l| l.contains("Script exited with non-zero exit status: 1"))
                .count(),
            2,
            "{errors:?}"
        );
        assert_eq!(errors.len(), 4, "{errors:?}");
    }

    #[test]
    fn real_post_processor_error() {
        let p = parse(&sample("build-machine-readable-error-postprocessor.txt"));
        assert!(p.artifacts().is_empty());
        let errors = p.errors();
        assert!(
            errors.iter().any(
                |l| l.starts_with("* Post-processor failed: Unable to write ")
                    && l.ends_with("packer-manifest.json: no such file or directory")
            ),
            "{errors:?}"
        );
        assert!(errors.iter().all(|l| !l.is_empty() && l.trim() == l));
        // The provisioner ran before the post-processor failed.
        assert_eq!(p.software("capstan-software:").len(), 6);
    }

    #[test]
    fn real_validate_error_without_vars() {
        let p = parse(&sample("build-machine-readable-error-novars.txt"));
        let errors = p.errors();
        assert_eq!(errors[..2], ["Error:", "3 errors occurred:"]);
        for var in ["registry_dir", "manifest_path", "image_name"] {
            let line = format!("* required variable not set: {var}");
            assert!(errors.contains(&line), "{errors:?}");
        }
    }

    #[test]
    fn software_as_a_json_object() {
        // Real output of an earlier bake.sh, which printed the versions as JSON.
        let p = parse(
            "1795653974,,ui,message,    golden-image: capstan-software: {\"bash\":\"5.2.15\"%!(PACKER_COMMA)\"coreutils\":\"9.1\"%!(PACKER_COMMA)\"healthcheck\":\"1.0.0\"}\n",
        );
        let software = p.software("capstan-software:");
        assert_eq!(software["coreutils"], "9.1");
        assert_eq!(software.len(), 3);
    }

    #[test]
    fn validate_error_is_split_into_lines() {
        let p = parse(
            "1795654045,,ui,error,Error: \\n\\n3 errors occurred:\\n\t* required variable not set: registry_dir\\n\t* required variable not set: image_name\\n\\n\\n\\n\n",
        );
        assert_eq!(
            p.errors(),
            [
                "Error:",
                "3 errors occurred:",
                "* required variable not set: registry_dir",
                "* required variable not set: image_name"
            ]
        );
    }

    #[test]
    fn error_records_without_ui_lines_and_crashes() {
        let p = parse("1,web,error,disk full%!(PACKER_COMMA) sorry\n2,,error-count,1\n");
        assert_eq!(p.errors(), ["web: disk full, sorry"]);
        let p = parse("panic: runtime error\ngoroutine 1 [running]:\n");
        assert_eq!(
            p.errors(),
            ["panic: runtime error", "goroutine 1 [running]:"]
        );
    }

    #[test]
    fn multiple_builds_and_files() {
        let p = parse(
            "1,a,artifact-count,1\n\
             1,a,artifact,0,builder-id,mitchellh.amazonebs\n\
             1,a,artifact,0,id,eu-west-1:ami-1%!(PACKER_COMMA)us-east-1:ami-2\n\
             1,a,artifact,0,files-count,2\n\
             1,a,artifact,0,file,0,out/disk.raw\n\
             1,a,artifact,0,file,1,out/disk.vmdk\n\
             1,a,artifact,0,end\n\
             1,b,artifact,0,builder-id,fnoeding.null\n\
             1,b,artifact,0,end\n",
        );
        let a = p.artifacts();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].id, "eu-west-1:ami-1,us-east-1:ami-2");
        assert_eq!(a[0].files, ["out/disk.raw", "out/disk.vmdk"]);
        assert_eq!(a[1].build, "b");
        assert_eq!(a[1].builder_id, "fnoeding.null");
    }

    #[test]
    fn software_pairs() {
        assert_eq!(
            parse_pairs("a=1 b=2.0 junk =x c="),
            [
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2.0".to_string()),
                ("c".to_string(), String::new())
            ]
        );
        assert_eq!(
            parse_pairs(r#"{"n": 3, "s": "x"}"#),
            [
                ("n".to_string(), "3".to_string()),
                ("s".to_string(), "x".to_string())
            ]
        );
        assert!(parse_pairs("{broken").is_empty());
    }
}
