//! The stage's `with` table: a list of declarative checks.
//!
//! Parsing happens in two steps. `serde` (and the JSON Schema the host
//! validates against before any stage runs) checks the shape; then each
//! check is parsed on its own and validated for its kind, so that every
//! error names the check it is about — `check "web answers" (checks[3])`
//! — rather than only a position in a list.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use regex_lite::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The programs this plugin requests (`describe` is static, so the set is
/// fixed): `command` checks may run only these.
pub const PROGRAMS: [&str; 2] = ["ansible", "stat"];

/// Default time limit of a `tcp` check.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time limit of an `http` check.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time limit of a `command` check.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The stage's `with` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The checks. Each runs once; results are reported in this order.
    /// In TOML: one `[[stages.<name>.with.checks]]` table per check.
    #[schemars(with = "Vec<CheckSpec>", length(min = 1))]
    pub checks: Vec<serde_json::Value>,
}

/// What a check is about; the JUnit report has one test suite per category:
/// `connectivity` (can the hosts and ports be reached?), `service` (do the
/// services answer as they should?), `security` (is the system hardened:
/// file modes, config lines?), `functionality` (does the deployed thing do
/// its job?).
///
/// (The variants carry no doc comments so that the schema is a plain
/// `enum`, which the host reports as "is not one of [...]".)
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Category {
    Connectivity,
    Service,
    Security,
    Functionality,
}

impl Category {
    /// All categories, in report order.
    pub const ALL: [Category; 4] = [
        Category::Connectivity,
        Category::Service,
        Category::Security,
        Category::Functionality,
    ];

    /// The name used in the pipeline file and the reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Connectivity => "connectivity",
            Category::Service => "service",
            Category::Security => "security",
            Category::Functionality => "functionality",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a check is made: `tcp` (`host:port` accepts a TCP connection),
/// `command` (a granted program exits with `expect_status` and its output
/// matches), `file` (a path exists or not, has a mode, contains a pattern),
/// `http` (a plain `http://` URL answers `status` with a matching body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Kind {
    Tcp,
    Command,
    File,
    Http,
}

impl Kind {
    /// The name used in the pipeline file and the reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Command => "command",
            Kind::File => "file",
            Kind::Http => "http",
        }
    }

    /// All kinds.
    const ALL: [Kind; 4] = [Kind::Tcp, Kind::Command, Kind::File, Kind::Http];

    /// The fields a check of this kind must have.
    fn required(self) -> &'static [&'static str] {
        match self {
            Kind::Tcp => &["host", "port"],
            Kind::Command => &["program"],
            Kind::File => &["path"],
            Kind::Http => &["url"],
        }
    }

    /// The fields a check of this kind may have besides the common ones.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Tcp => &["host", "port", "timeout"],
            Kind::Command => &[
                "program",
                "args",
                "cwd",
                "env",
                "expect_status",
                "stdout",
                "stderr",
                "timeout",
            ],
            Kind::File => &["path", "exists", "mode", "contains"],
            Kind::Http => &["url", "status", "body", "timeout"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A time limit: milliseconds, or a string with a unit (`"500ms"`, `"2s"`,
/// `"1m"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Timeout {
    /// Milliseconds.
    Millis(u64),
    /// A number with a unit: `ms`, `s` or `m`.
    Text(String),
}

/// One schema for both forms (`minimum` applies only to numbers, `pattern`
/// only to strings), so that the host's message says what is wrong rather
/// than "not valid under any of the schemas".
impl JsonSchema for Timeout {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timeout".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Milliseconds, or a number with a unit: \"500ms\", \"2s\", \"1m\".",
            "type": ["integer", "string"],
            "minimum": 1,
            "pattern": "^[0-9]+(ms|s|m)$",
        })
    }
}

impl Timeout {
    fn duration(&self) -> Result<Duration, String> {
        let bad = |t: &str| {
            format!(
                "`timeout` {t:?} is not a duration: use milliseconds (2000) or a number with a unit (\"500ms\", \"2s\", \"1m\")"
            )
        };
        let d = match self {
            Timeout::Millis(ms) => Duration::from_millis(*ms),
            Timeout::Text(t) => {
                let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
                let n: u64 = digits.parse().map_err(|_| bad(t))?;
                match &t[digits.len()..] {
                    "ms" => Duration::from_millis(n),
                    "s" => Duration::from_secs(n),
                    "m" => Duration::from_secs(n.saturating_mul(60)),
                    _ => return Err(bad(t)),
                }
            }
        };
        if d.is_zero() {
            return Err("`timeout` must be more than zero".into());
        }
        Ok(d)
    }
}

/// One check as written in the pipeline file. Besides `name`, `category`,
/// `kind` and `required`, only the fields of its kind are allowed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = kind_rules)]
pub struct CheckSpec {
    /// Unique name, shown in the summary table, the reports and the
    /// failure message.
    pub name: String,
    /// `connectivity`, `service`, `security` or `functionality`.
    pub category: Category,
    /// `tcp`, `command`, `file` or `http`.
    pub kind: Kind,
    /// A failed optional check (`required = false`) is reported but does
    /// not fail the stage. Default: true.
    #[serde(default)]
    pub required: Option<bool>,

    /// tcp: host name or address to connect to (must match the `connect`
    /// grant).
    #[serde(default)]
    pub host: Option<String>,
    /// tcp: port to connect to.
    #[serde(default)]
    pub port: Option<u16>,
    /// tcp, http, command: time limit (milliseconds, or "500ms", "2s",
    /// "1m"). Defaults: tcp 5s, http 10s, command 2m.
    #[serde(default)]
    #[schemars(with = "Timeout")]
    pub timeout: Option<Timeout>,

    /// http: plain `http://` URL to GET (host and port must match the
    /// `connect` grant). Redirects are not followed.
    #[serde(default)]
    pub url: Option<String>,
    /// http: expected status code. Default: 200.
    #[serde(default)]
    pub status: Option<u16>,
    /// http: regex the body (its first 64 KiB) must match.
    #[serde(default)]
    pub body: Option<String>,

    /// command: program to run, `ansible` or `stat` (the only programs this
    /// plugin requests; its `exec` grant decides which arguments it may get).
    #[serde(default)]
    pub program: Option<String>,
    /// command: arguments, passed as they are (no shell).
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// command: absolute working directory, inside the stage's granted
    /// directories. Default: the stage work dir.
    #[serde(default)]
    pub cwd: Option<String>,
    /// command: environment variables for the program (each must be allowed
    /// by the `exec` grant's `env`).
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// command: expected exit code. Default: 0.
    #[serde(default)]
    pub expect_status: Option<i32>,
    /// command: regex the captured stdout must match.
    #[serde(default)]
    pub stdout: Option<String>,
    /// command: regex the captured stderr must match.
    #[serde(default)]
    pub stderr: Option<String>,

    /// file: absolute path, inside the stage's `read` grants.
    #[serde(default)]
    pub path: Option<String>,
    /// file: whether the path must exist (true) or must not (false).
    /// Default: true.
    #[serde(default)]
    pub exists: Option<bool>,
    /// file: expected permission bits, octal, as a string: "0600", "0755",
    /// "4755".
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-7]{3,5}$"))]
    pub mode: Option<String>,
    /// file: regex the file's content must match.
    #[serde(default)]
    pub contains: Option<String>,
}

/// Add to the schema of a check, per kind, the fields it needs and those it
/// may not have, so that the host reports such mistakes when it loads the
/// pipeline (`with.checks.2: "port" is a required property`), before any
/// stage runs. The plugin checks the same again, naming the check.
fn kind_rules(schema: &mut schemars::Schema) {
    let all: Vec<&str> = Kind::ALL.iter().flat_map(|k| k.fields()).copied().collect();
    let rules: Vec<serde_json::Value> = Kind::ALL
        .iter()
        .map(|&kind| {
            let forbidden: serde_json::Map<String, serde_json::Value> = all
                .iter()
                .filter(|f| !kind.fields().contains(f))
                .map(|f| ((*f).to_string(), serde_json::Value::Bool(false)))
                .collect();
            serde_json::json!({
                "if": { "properties": { "kind": { "const": kind.as_str() } }, "required": ["kind"] },
                "then": { "required": kind.required(), "properties": forbidden },
            })
        })
        .collect();
    schema.insert("allOf".into(), rules.into());
}

/// A regex with the text it was written as (for messages).
#[derive(Debug, Clone)]
pub struct Pattern {
    /// As written in the pipeline file.
    pub source: String,
    regex: Regex,
}

impl Pattern {
    fn new(field: &str, source: &str) -> Result<Pattern, String> {
        let regex = Regex::new(source).map_err(|e| {
            format!(
                "`{field}` is not a valid regex: {}",
                first_line(&e.to_string())
            )
        })?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.source)
    }
}

/// A validated check.
#[derive(Debug, Clone)]
pub struct Check {
    /// Unique name.
    pub name: String,
    /// Report category.
    pub category: Category,
    /// Whether a failure fails the stage.
    pub required: bool,
    /// How to make it.
    pub probe: Probe,
}

/// What to do for a check, by kind.
#[derive(Debug, Clone)]
pub enum Probe {
    /// Connect to `host:port`.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// Time limit.
        timeout: Duration,
    },
    /// GET `url`.
    Http {
        /// Plain `http://` URL.
        url: String,
        /// Expected status.
        status: u16,
        /// Regex the body must match.
        body: Option<Pattern>,
        /// Time limit.
        timeout: Duration,
    },
    /// Run a granted program.
    Command {
        /// `ansible` or `stat`.
        program: String,
        /// Arguments.
        args: Vec<String>,
        /// Working directory.
        cwd: Option<String>,
        /// Environment variables for the program.
        env: BTreeMap<String, String>,
        /// Expected exit code.
        expect_status: i32,
        /// Regex stdout must match.
        stdout: Option<Pattern>,
        /// Regex stderr must match.
        stderr: Option<Pattern>,
        /// Time limit.
        timeout: Duration,
    },
    /// Look at a file.
    File {
        /// Absolute path.
        path: String,
        /// Must exist (true) or must not (false).
        exists: bool,
        /// Expected permission bits.
        mode: Option<u32>,
        /// Regex the content must match.
        contains: Option<Pattern>,
    },
}

impl Probe {
    /// The check's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Probe::Tcp { .. } => Kind::Tcp,
            Probe::Http { .. } => Kind::Http,
            Probe::Command { .. } => Kind::Command,
            Probe::File { .. } => Kind::File,
        }
    }

    /// What the check looks at, in one line: `host:port`, the URL, the
    /// command line or the path.
    pub fn target(&self) -> String {
        match self {
            Probe::Tcp { host, port, .. } => format!("{host}:{port}"),
            Probe::Http { url, .. } => format!("GET {url}"),
            Probe::Command { program, args, .. } => command_line(program, args),
            Probe::File { path, .. } => path.clone(),
        }
    }
}

/// `program arg…`, quoting arguments with spaces, for messages.
pub fn command_line(program: &str, args: &[String]) -> String {
    let mut line = program.to_string();
    for arg in args {
        line.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"') {
            line.push_str(&format!("{arg:?}"));
        } else {
            line.push_str(arg);
        }
    }
    line
}

/// Format permission bits as the pipeline file writes them: `0600`, `4755`.
pub fn format_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

impl Config {
    /// Parse and validate every check. The error names the check (by name
    /// when it has one, and by position) and the field.
    pub fn checks(&self) -> Result<Vec<Check>, String> {
        if self.checks.is_empty() {
            return Err(
                "`checks` is empty: add at least one `[[stages.<name>.with.checks]]`".into(),
            );
        }
        let mut checks: Vec<Check> = Vec::with_capacity(self.checks.len());
        for (index, value) in self.checks.iter().enumerate() {
            let check = parse_check(value).map_err(|e| format!("{}: {e}", label(value, index)))?;
            if let Some(first) = checks.iter().position(|c| c.name == check.name) {
                return Err(format!(
                    "{}: the name is already used by checks[{first}]; check names must be unique",
                    label(value, index)
                ));
            }
            checks.push(check);
        }
        Ok(checks)
    }
}

/// `check "name" (checks[i])`, or `checks[i]` when it has no usable name.
fn label(value: &serde_json::Value, index: usize) -> String {
    match value.get("name").and_then(|n| n.as_str()) {
        Some(name) if !name.trim().is_empty() => format!("check {name:?} (checks[{index}])"),
        _ => format!("checks[{index}]"),
    }
}

fn parse_check(value: &serde_json::Value) -> Result<Check, String> {
    let spec: CheckSpec = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        if path == "." {
            message
        } else {
            format!("field `{path}`: {message}")
        }
    })?;
    spec.validate()
}

impl CheckSpec {
    /// The fields that are set, by name (for the "does not apply" check).
    fn set_fields(&self) -> Vec<&'static str> {
        let set = [
            ("host", self.host.is_some()),
            ("port", self.port.is_some()),
            ("timeout", self.timeout.is_some()),
            ("url", self.url.is_some()),
            ("status", self.status.is_some()),
            ("body", self.body.is_some()),
            ("program", self.program.is_some()),
            ("args", self.args.is_some()),
            ("cwd", self.cwd.is_some()),
            ("env", self.env.is_some()),
            ("expect_status", self.expect_status.is_some()),
            ("stdout", self.stdout.is_some()),
            ("stderr", self.stderr.is_some()),
            ("path", self.path.is_some()),
            ("exists", self.exists.is_some()),
            ("mode", self.mode.is_some()),
            ("contains", self.contains.is_some()),
        ];
        set.into_iter()
            .filter(|(_, is_set)| *is_set)
            .map(|(name, _)| name)
            .collect()
    }

    fn validate(self) -> Result<Check, String> {
        if self.name.trim().is_empty() {
            return Err("`name` is empty".into());
        }
        let kind = self.kind;
        if let Some(field) = self
            .set_fields()
            .into_iter()
            .find(|f| !kind.fields().contains(f))
        {
            return Err(format!(
                "`{field}` does not apply to a {kind} check (its fields: {})",
                kind.fields().join(", ")
            ));
        }
        let missing = |field: &str| format!("a {kind} check needs `{field}`");
        let timeout = |default: Duration| match &self.timeout {
            Some(t) => t.duration(),
            None => Ok(default),
        };
        let probe = match kind {
            Kind::Tcp => {
                let host = self.host.clone().ok_or_else(|| missing("host"))?;
                if host.trim().is_empty() {
                    return Err("`host` is empty".into());
                }
                let port = self.port.ok_or_else(|| missing("port"))?;
                if port == 0 {
                    return Err("`port` must be between 1 and 65535".into());
                }
                Probe::Tcp {
                    host,
                    port,
                    timeout: timeout(TCP_TIMEOUT)?,
                }
            }
            Kind::Http => {
                let url = self.url.clone().ok_or_else(|| missing("url"))?;
                if !url.starts_with("http://") {
                    return Err(format!(
                        "`url` {url:?} is not a plain http:// URL (the host probes no https)"
                    ));
                }
                Probe::Http {
                    url,
                    status: self.status.unwrap_or(200),
                    body: self
                        .body
                        .as_deref()
                        .map(|b| Pattern::new("body", b))
                        .transpose()?,
                    timeout: timeout(HTTP_TIMEOUT)?,
                }
            }
            Kind::Command => {
                let program = self.program.clone().ok_or_else(|| missing("program"))?;
                if !PROGRAMS.contains(&program.as_str()) {
                    return Err(format!(
                        "`program` {program:?} cannot be run by this plugin: it requests only {} \
                         (run other programs on the inventory's hosts through ansible, e.g. \
                         program = \"ansible\", args = [\"all\", \"-i\", \"<inventory>\", \"-m\", \"command\", \"-a\", \"{program} …\"])",
                        PROGRAMS.join(" and ")
                    ));
                }
                if let Some(cwd) = &self.cwd
                    && !cwd.starts_with('/')
                {
                    return Err(format!("`cwd` {cwd:?} is not an absolute path"));
                }
                let pattern = |field: &str, p: &Option<String>| {
                    p.as_deref().map(|p| Pattern::new(field, p)).transpose()
                };
                Probe::Command {
                    program,
                    args: self.args.clone().unwrap_or_default(),
                    cwd: self.cwd.clone(),
                    env: self.env.clone().unwrap_or_default(),
                    expect_status: self.expect_status.unwrap_or(0),
                    stdout: pattern("stdout", &self.stdout)?,
                    stderr: pattern("stderr", &self.stderr)?,
                    timeout: timeout(COMMAND_TIMEOUT)?,
                }
            }
            Kind::File => {
                let path = self.path.clone().ok_or_else(|| missing("path"))?;
                if !path.starts_with('/') {
                    return Err(format!("`path` {path:?} is not an absolute path"));
                }
                let exists = self.exists.unwrap_or(true);
                if !exists && (self.mode.is_some() || self.contains.is_some()) {
                    return Err(
                        "`mode` and `contains` cannot be checked on a path that must not exist (`exists = false`)"
                            .into(),
                    );
                }
                let mode = self.mode.as_deref().map(parse_mode).transpose()?;
                Probe::File {
                    path,
                    exists,
                    mode,
                    contains: self
                        .contains
                        .as_deref()
                        .map(|c| Pattern::new("contains", c))
                        .transpose()?,
                }
            }
        };
        Ok(Check {
            name: self.name,
            category: self.category,
            required: self.required.unwrap_or(true),
            probe,
        })
    }
}

/// `"0600"` → 0o600. Octal digits only, at most `07777`.
fn parse_mode(text: &str) -> Result<u32, String> {
    let bad = || {
        format!(
            "`mode` {text:?} is not an octal permission mode like \"0600\", \"0755\" or \"4755\""
        )
    };
    if !(3..=5).contains(&text.len()) || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    let mode = u32::from_str_radix(text, 8).map_err(|_| bad())?;
    if mode > 0o7777 {
        return Err(bad());
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checks(checks: serde_json::Value) -> Result<Vec<Check>, String> {
        let config: Config = serde_json::from_value(json!({ "checks": checks })).unwrap();
        config.checks()
    }

    fn error(value: serde_json::Value) -> String {
        checks(value).unwrap_err()
    }

    #[test]
    fn parses_every_kind_with_defaults() {
        let parsed = checks(json!([
            {"name": "ssh port", "category": "connectivity", "kind": "tcp", "host": "127.0.0.1", "port": 22},
            {"name": "web", "category": "service", "kind": "http", "url": "http://127.0.0.1:8080/", "body": "ok", "timeout": "2s", "required": false},
            {"name": "python", "category": "functionality", "kind": "command", "program": "ansible",
             "args": ["all", "-i", "/inv.yml", "-m", "command", "-a", "python3 --version"], "stdout": "Python 3\\.", "timeout": 1500},
            {"name": "sshd", "category": "security", "kind": "file", "path": "/etc/ssh/sshd_config", "mode": "0600", "contains": "^PermitRootLogin no$"},
            {"name": "no telnet", "category": "security", "kind": "file", "path": "/usr/sbin/telnetd", "exists": false},
        ]))
        .unwrap();
        assert_eq!(parsed.len(), 5);
        let Probe::Tcp { timeout, .. } = &parsed[0].probe else {
            panic!()
        };
        assert_eq!(*timeout, Duration::from_secs(5));
        assert!(parsed[0].required);
        let Probe::Http {
            status,
            body,
            timeout,
            ..
        } = &parsed[1].probe
        else {
            panic!()
        };
        assert_eq!((*status, *timeout), (200, Duration::from_secs(2)));
        assert!(body.as_ref().unwrap().is_match("all ok"));
        assert!(!parsed[1].required);
        let Probe::Command {
            expect_status,
            timeout,
            ..
        } = &parsed[2].probe
        else {
            panic!()
        };
        assert_eq!((*expect_status, *timeout), (0, Duration::from_millis(1500)));
        assert_eq!(
            parsed[2].probe.target(),
            "ansible all -i /inv.yml -m command -a \"python3 --version\""
        );
        let Probe::File { mode, exists, .. } = &parsed[3].probe else {
            panic!()
        };
        assert_eq!((*mode, *exists), (Some(0o600), true));
        assert_eq!(format_mode(mode.unwrap()), "0600");
        assert_eq!(format_mode(0o4755), "4755");
        let Probe::File { exists, .. } = &parsed[4].probe else {
            panic!()
        };
        assert!(!exists);
    }

    #[test]
    fn a_bad_kind_names_the_check() {
        let e = error(json!([
            {"name": "ok", "category": "service", "kind": "tcp", "host": "h", "port": 1},
            {"name": "web answers", "category": "service", "kind": "ping", "host": "h"},
        ]));
        assert!(
            e.starts_with("check \"web answers\" (checks[1]): field `kind`: unknown variant `ping`, expected one of `tcp`, `command`, `file`, `http`"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_check_and_the_field() {
        let cases = [
            (
                json!({"name": "x", "category": "speed", "kind": "tcp"}),
                "check \"x\" (checks[0]): field `category`: unknown variant `speed`",
            ),
            (
                json!({"category": "service", "kind": "tcp"}),
                "checks[0]: missing field `name`",
            ),
            (
                json!({"name": "x", "category": "service", "kind": "tcp", "port": 80}),
                "check \"x\" (checks[0]): a tcp check needs `host`",
            ),
            (
                json!({"name": "x", "category": "service", "kind": "tcp", "host": "h", "port": 80, "url": "http://h/"}),
                "check \"x\" (checks[0]): `url` does not apply to a tcp check (its fields: host, port, timeout)",
            ),
            (
                json!({"name": "x", "category": "service", "kind": "tcp", "host": "h", "port": 70000}),
                "check \"x\" (checks[0]): field `port`: invalid value: integer `70000`",
            ),
            (
                json!({"name": "x", "category": "service", "kind": "tcp", "host": "h", "port": 1, "timeout": "2 sec"}),
                "check \"x\" (checks[0]): `timeout` \"2 sec\" is not a duration",
            ),
            (
                json!({"name": "x", "category": "service", "kind": "http", "url": "https://h/"}),
                "check \"x\" (checks[0]): `url` \"https://h/\" is not a plain http:// URL",
            ),
            (
                json!({"name": "x", "category": "service", "kind": "http", "url": "http://h/", "body": "(unclosed"}),
                "check \"x\" (checks[0]): `body` is not a valid regex",
            ),
            (
                json!({"name": "x", "category": "service", "kind": "command", "program": "curl"}),
                "check \"x\" (checks[0]): `program` \"curl\" cannot be run by this plugin: it requests only ansible and stat",
            ),
            (
                json!({"name": "x", "category": "service", "kind": "command", "program": "ansible", "args": ["a", 1]}),
                "check \"x\" (checks[0]): field `args[1]`: invalid type: integer `1`, expected a string",
            ),
            (
                json!({"name": "x", "category": "security", "kind": "file", "path": "etc/passwd"}),
                "check \"x\" (checks[0]): `path` \"etc/passwd\" is not an absolute path",
            ),
            (
                json!({"name": "x", "category": "security", "kind": "file", "path": "/p", "mode": "0900"}),
                "check \"x\" (checks[0]): `mode` \"0900\" is not an octal permission mode",
            ),
            (
                json!({"name": "x", "category": "security", "kind": "file", "path": "/p", "mode": 384}),
                "check \"x\" (checks[0]): field `mode`: invalid type: integer `384`, expected a string",
            ),
            (
                json!({"name": "x", "category": "security", "kind": "file", "path": "/p", "exists": false, "contains": "a"}),
                "check \"x\" (checks[0]): `mode` and `contains` cannot be checked on a path that must not exist",
            ),
            (
                json!({"name": "x", "category": "security", "kind": "file", "path": "/p", "colour": "red"}),
                "check \"x\" (checks[0]): field `colour`: unknown field `colour`",
            ),
        ];
        for (check, expected) in cases {
            let e = error(json!([check]));
            assert!(e.starts_with(expected), "{e}\n  expected: {expected}");
        }
    }

    #[test]
    fn names_are_unique_and_checks_not_empty() {
        let tcp =
            json!({"name": "a", "category": "service", "kind": "tcp", "host": "h", "port": 1});
        let e = error(json!([tcp, tcp]));
        assert_eq!(
            e,
            "check \"a\" (checks[1]): the name is already used by checks[0]; check names must be unique"
        );
        assert!(error(json!([])).starts_with("`checks` is empty"));
    }

    #[test]
    fn timeouts() {
        let d = |t: Timeout| t.duration();
        assert_eq!(d(Timeout::Millis(250)), Ok(Duration::from_millis(250)));
        assert_eq!(
            d(Timeout::Text("500ms".into())),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(d(Timeout::Text("2s".into())), Ok(Duration::from_secs(2)));
        assert_eq!(d(Timeout::Text("1m".into())), Ok(Duration::from_secs(60)));
        assert!(d(Timeout::Text("1h".into())).is_err());
        assert!(d(Timeout::Text("s".into())).is_err());
        assert!(d(Timeout::Millis(0)).is_err());
    }

    #[test]
    fn schema_lists_kinds_and_categories() {
        let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
        let text = schema.to_string();
        for word in [
            "connectivity",
            "functionality",
            "tcp",
            "command",
            "file",
            "http",
        ] {
            assert!(
                text.contains(&format!("\"{word}\"")),
                "{word} missing: {text}"
            );
        }
        assert_eq!(schema["properties"]["checks"]["minItems"], 1);
    }
}
