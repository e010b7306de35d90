//! `[secrets]` and the stages' `grants.secrets`, validated: each secret has
//! exactly one source; each grant names a declared secret and delivers it
//! in one variable that nothing else of the stage sets; no plugin reads a
//! secret's host variable, neither through its `env` grant nor through a
//! `${env.…}` reference in `with`. The host side (resolving, delivering,
//! redacting) is `caps::secret`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::Serialize;
use toml::Spanned;

use super::diag::{self, Diagnostic};
use super::file::{Grants, SecretEntry};
use super::interpolate::{self, Reference};
use super::source::{Part, SourceMap};

/// How long a secret's command may run when its entry sets no `timeout`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Variables the host sets for every program itself: a secret delivered
/// in one of them would be overwritten or break the program.
const RESERVED: &[&str] = &["PATH", "HOME", "TMPDIR"];

/// A declared secret.
#[derive(Debug, Clone, Serialize)]
pub struct Secret {
    pub name: String,
    pub source: SecretSource,
}

/// Where the host gets a secret's value (resolved when a stage that is
/// granted it starts; never by a plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SecretSource {
    /// A variable of the host's environment.
    Env { var: String },
    /// A file (absolute, or made absolute from the pipeline's directory).
    File { path: PathBuf },
    /// A command the host runs (argv, no shell, in the pipeline's
    /// directory, with the host's environment); its stdout, less one
    /// trailing newline, is the value.
    Command {
        argv: Vec<String>,
        #[serde(serialize_with = "humantime_text")]
        timeout: Duration,
    },
}

fn humantime_text<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env { var } => write!(f, "host variable `{var}`"),
            SecretSource::File { path } => write!(f, "file {}", path.display()),
            SecretSource::Command { argv, .. } => write!(f, "command `{}`", argv.join(" ")),
        }
    }
}

/// Whether `name` is a plain environment variable name.
fn var_problem(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => Some("is empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            Some("must start with a letter or `_`")
        }
        _ if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Some("may hold only letters, digits and `_`")
        }
        _ => None,
    }
}

/// `[secrets]`, validated; problems are added to `errors`.
pub fn declared(
    raw: &IndexMap<Spanned<String>, SecretEntry>,
    dir: &Path,
    map: &SourceMap,
    errors: &mut Vec<Diagnostic>,
) -> IndexMap<String, Secret> {
    let mut out = IndexMap::new();
    for (name, entry) in raw {
        let name = name.get_ref();
        let at = |key: &str, part: Part| map.nearest(&["secrets", name, key], part);
        if let Some(problem) = super::name_problem(name) {
            errors.push(
                map.error(&["secrets", name], Part::Key, format!("secret name `{}` {problem}", crate::text::inline(name)))
                    .help("name secrets with letters, digits, `_` and `-` (at most 64, not starting with `-`), e.g. [secrets.deploy_token]"),
            );
            continue;
        }
        let given: Vec<&str> = [
            entry.env.as_ref().map(|_| "env"),
            entry.file.as_ref().map(|_| "file"),
            entry.command.as_ref().map(|_| "command"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() != 1 {
            let (span, message) = match given.get(1) {
                Some(second) => (
                    at(second, Part::Key),
                    format!(
                        "secret `{name}` has {} sources ({}); it must have exactly one",
                        given.len(),
                        given.join(", ")
                    ),
                ),
                None => (
                    map.nearest(&["secrets", name], Part::Key),
                    format!("secret `{name}` has no source"),
                ),
            };
            errors.push(map.error_at(Some(span), message).help(
                "give one of: env = \"HOST_VARIABLE\", file = \"path/to/file\", command = [\"pass\", \"show\", \"ci/token\"]",
            ));
            continue;
        }
        if entry.timeout.is_some() && entry.command.is_none() {
            errors.push(
                map.error_at(
                    Some(at("timeout", Part::Key)),
                    format!("secret `{name}`: `timeout` applies only to a `command` source"),
                )
                .help("remove it"),
            );
        }
        let source = if let Some(var) = &entry.env {
            if let Some(problem) = var_problem(var) {
                errors.push(
                    map.error_at(
                        Some(at("env", Part::Value)),
                        format!("secret `{name}`: host variable name `{}` {problem}", crate::text::inline(var)),
                    )
                    .help("name the host environment variable that holds it, e.g. env = \"DEPLOY_TOKEN\""),
                );
                continue;
            }
            SecretSource::Env { var: var.clone() }
        } else if let Some(file) = &entry.file {
            if file.is_empty() {
                errors.push(
                    map.error_at(
                        Some(at("file", Part::Value)),
                        format!("secret `{name}`: `file` is empty"),
                    )
                    .help(format!(
                        "the path of the file that holds it, relative to {}",
                        dir.display()
                    )),
                );
                continue;
            }
            SecretSource::File {
                path: dir.join(file),
            }
        } else {
            let argv = entry.command.clone().unwrap_or_default();
            if argv.first().is_none_or(String::is_empty) {
                errors.push(
                    map.error_at(Some(at("command", Part::Value)), format!("secret `{name}`: `command` names no program"))
                        .help("give the program and its arguments (no shell), e.g. command = [\"pass\", \"show\", \"ci/token\"]"),
                );
                continue;
            }
            SecretSource::Command {
                argv,
                timeout: entry.timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
            }
        };
        out.insert(
            name.clone(),
            Secret {
                name: name.clone(),
                source,
            },
        );
    }
    out
}

/// Problems of stage `stage`'s `grants.secrets`, and of what else of the
/// stage would hand a secret's value to its plugin outside them.
pub fn check_stage(
    stage: &str,
    grants: &Grants,
    with: &serde_json::Value,
    secrets: &IndexMap<String, Secret>,
    raw: &IndexMap<Spanned<String>, SecretEntry>,
    map: &SourceMap,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut error = |path: &[&str], part: Part, message: String, help: String| {
        problems.push(map.error(path, part, message).help(help).stage(stage));
    };
    let programs: Vec<&str> = grants.exec.iter().map(|e| e.program.as_str()).collect();
    let mut delivered: HashMap<&str, &str> = HashMap::new();
    // Besides programs, only the host's own requests to `connect` targets
    // (a webhook POST to `secret:<name>`) use a secret; never the plugin.
    let host_requests = !grants.connect.is_empty();
    if !grants.secrets.is_empty() && programs.is_empty() && !host_requests {
        error(
            &["stages", stage, "grants", "secrets"],
            Part::Key,
            format!("stage `{stage}` grants secrets but no program and no `connect`: secrets reach only the programs a stage starts and the host's requests for it (a POST to `secret:<name>`), never its plugin"),
            "add the [[stages.<stage>.grants.exec]] of the program that needs them, or remove the secrets".replace("<stage>", stage),
        );
    }
    for (name, grant) in &grants.secrets {
        let key = ["stages", stage, "grants", "secrets", name.as_str()];
        // Declared but invalid: its own problem is reported at [secrets].
        if !secrets.contains_key(name) && !raw.keys().any(|k| k.get_ref() == name) {
            let help = match diag::closest(name, secrets.keys().map(String::as_str)) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!(
                    "declare it: [secrets.{name}] with env = \"HOST_VARIABLE\", file = \"path\" or command = [\"program\", \"arg\"]"
                ),
            };
            error(
                &key,
                Part::Key,
                format!(
                    "stage `{stage}` is granted secret `{name}`, which is not declared under [secrets]"
                ),
                help,
            );
            continue;
        }
        let var = match (&grant.env, &grant.file) {
            (Some(var), None) => ("env", var),
            (None, Some(var)) => ("file", var),
            _ => {
                error(
                    &key,
                    Part::Value,
                    format!(
                        "stage `{stage}`, secret `{name}`: give exactly one of `env` and `file`"
                    ),
                    format!(
                        "{name} = {{ env = \"VARIABLE\" }} puts the value in VARIABLE; {name} = {{ file = \"VARIABLE\" }} puts the path of a file (mode 0600) that holds it"
                    ),
                );
                continue;
            }
        };
        let (how, var) = (var.0, var.1.as_str());
        let at = [&key[..], &[how]].concat();
        if let Some(problem) = var_problem(var) {
            error(
                &at,
                Part::Value,
                format!(
                    "stage `{stage}`, secret `{name}`: variable name `{}` {problem}",
                    crate::text::inline(var)
                ),
                "name the variable the programs read, e.g. TF_VAR_token".into(),
            );
            continue;
        }
        if RESERVED.contains(&var) {
            error(
                &at,
                Part::Value,
                format!(
                    "stage `{stage}`, secret `{name}`: `{var}` is set by the host for every program"
                ),
                "deliver it in another variable".into(),
            );
            continue;
        }
        if let Some(other) = delivered.insert(var, name) {
            error(
                &at,
                Part::Value,
                format!(
                    "stage `{stage}`: secrets `{other}` and `{name}` are both delivered in `{var}`"
                ),
                "deliver each in a variable of its own".into(),
            );
        }
        // A variable the plugin may set (or the host pass through) for a
        // program: which value a program got would depend on who set it last.
        for (i, exec) in grants.exec.iter().enumerate() {
            if let Some(pattern) = exec.env.iter().find(|p| crate::caps::env::matches(p, var)) {
                let i = i.to_string();
                error(
                    &["stages", stage, "grants", "exec", &i, "env"],
                    Part::Value,
                    format!(
                        "stage `{stage}`: secret `{name}` is delivered in `{var}`, which `env` of the exec grant of `{}` also allows (`{pattern}`): the plugin could set it itself",
                        exec.program
                    ),
                    format!(
                        "deliver the secret in a variable no exec grant's `env` matches, or narrow `{pattern}`"
                    ),
                );
            }
        }
        if let Some(list) = &grant.programs {
            if list.is_empty() && !host_requests {
                error(
                    &[&key[..], &["programs"]].concat(),
                    Part::Value,
                    format!(
                        "stage `{stage}`, secret `{name}`: `programs` is empty, so no program receives it"
                    ),
                    "list the programs that need it, or remove the grant".into(),
                );
            }
            for (i, program) in list.iter().enumerate() {
                if !programs.contains(&program.as_str()) {
                    let i = i.to_string();
                    let help = match diag::closest(program, programs.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!("the stage's programs: {}", diag::list(&programs)),
                    };
                    error(
                        &[&key[..], &["programs", &i]].concat(),
                        Part::Value,
                        format!(
                            "stage `{stage}`, secret `{name}`: `programs` names `{}`, which no exec grant of the stage names",
                            crate::text::inline(program)
                        ),
                        help,
                    );
                }
            }
        }
    }
    // The plugin must not read a secret's source variable: not by name in
    // its `env` grant (a wildcard is not enough: the host leaves secrets'
    // variables out of what it passes), nor as `${env.…}` in `with`.
    let sources: HashMap<&str, &str> = secrets
        .values()
        .filter_map(|s| match &s.source {
            SecretSource::Env { var } => Some((var.as_str(), s.name.as_str())),
            _ => None,
        })
        .collect();
    for (i, pattern) in grants.env.iter().enumerate() {
        if let Some(secret) = sources.get(pattern.as_str()) {
            let i = i.to_string();
            error(
                &["stages", stage, "grants", "env", &i],
                Part::Value,
                format!(
                    "stage `{stage}`: `env` grants the plugin host variable `{pattern}`, the source of secret `{secret}`"
                ),
                format!(
                    "grant the secret instead: [stages.{stage}.grants.secrets] {secret} = {{ env = \"VARIABLE\" }} (its programs get it, redacted from what the run shows)"
                ),
            );
        }
    }
    for (path, text) in super::validator::strings(with) {
        let Ok(refs) = interpolate::references(text) else {
            continue;
        };
        for (_, reference) in refs {
            if let Reference::Env(var) = reference
                && let Some(secret) = sources.get(var.as_str())
            {
                let mut at: Vec<&str> = vec!["stages", stage, "with"];
                at.extend(path.iter().map(String::as_str));
                error(
                    &at,
                    Part::Value,
                    format!(
                        "stage `{stage}`: `with` references `${{env.{var}}}`, the source of secret `{secret}`: its value would reach the plugin and everything it writes"
                    ),
                    format!(
                        "grant the secret to the stage's programs instead: [stages.{stage}.grants.secrets] {secret} = {{ env = \"VARIABLE\" }}"
                    ),
                );
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::pipeline::Pipeline;

    const PLUGIN: &str = "[plugins.p]\npath = \"/dev/null\"\n";

    fn problems(toml: &str) -> Vec<String> {
        let text = format!("[pipeline]\nname = \"t\"\n{toml}");
        match Pipeline::parse(Path::new("/tmp/p.toml"), &text) {
            Ok(_) => Vec::new(),
            Err(d) => {
                d.0.iter()
                    .filter(|d| !d.message.contains("plugin `p`: cannot read"))
                    .map(|d| {
                        let (line, column) = d.location.unwrap_or((0, 0));
                        format!("{line}:{column}: {}", d.message)
                    })
                    .collect()
            }
        }
    }

    fn stage(grants: &str) -> String {
        format!(
            "{PLUGIN}[stages.s]\nplugin = \"p\"\n[[stages.s.grants.exec]]\nprogram = \"sh\"\nenv = [\"TF_*\"]\n{grants}"
        )
    }

    #[test]
    fn declared_secrets_have_one_source() {
        let table: &[(&str, &[&str])] = &[
            ("[secrets.a]\nenv = \"A\"\n", &[]),
            ("[secrets.a]\nfile = \"a.txt\"\n", &[]),
            (
                "[secrets.a]\ncommand = [\"pass\", \"show\", \"a\"]\ntimeout = \"5s\"\n",
                &[],
            ),
            ("[secrets.a]\n", &["3:10: secret `a` has no source"]),
            (
                "[secrets.a]\nenv = \"A\"\nfile = \"x\"\n",
                &["5:1: secret `a` has 2 sources (env, file); it must have exactly one"],
            ),
            (
                "[secrets.a]\nenv = \"A\"\ntimeout = \"1s\"\n",
                &["5:1: secret `a`: `timeout` applies only to a `command` source"],
            ),
            (
                "[secrets.a]\nenv = \"1A\"\n",
                &["4:7: secret `a`: host variable name `1A` must start with a letter or `_`"],
            ),
            (
                "[secrets.a]\ncommand = []\n",
                &["4:11: secret `a`: `command` names no program"],
            ),
            (
                "[secrets.\"a/b\"]\nenv = \"A\"\n",
                &["3:10: secret name `a/b` may hold only letters, digits, `_` and `-`"],
            ),
        ];
        let mut wrong = 0;
        for (toml, want) in table {
            let mut text = format!("{PLUGIN}[stages.s]\nplugin = \"p\"\n");
            text.insert_str(0, toml);
            let got = problems(&text);
            if got != *want {
                eprintln!("{toml:?}: {got:?}");
                wrong += 1;
            }
        }
        assert_eq!(wrong, 0);
    }

    #[test]
    fn grants_name_a_declared_secret_and_one_variable_of_their_own() {
        let secrets = "[secrets.token]\nenv = \"DEPLOY_TOKEN\"\n[secrets.key]\nfile = \"k\"\n";
        let table: &[(&str, &[&str])] = &[
            (
                "[stages.s.grants.secrets]\ntoken = { env = \"TOKEN\" }\nkey = { file = \"KEY_FILE\", programs = [\"sh\"] }\n",
                &[],
            ),
            (
                "[stages.s.grants.secrets]\ntokn = { env = \"TOKEN\" }\n",
                &[
                    "15:1: stage `s` is granted secret `tokn`, which is not declared under [secrets]",
                ],
            ),
            (
                "[stages.s.grants.secrets]\ntoken = { env = \"A\", file = \"B\" }\n",
                &["15:9: stage `s`, secret `token`: give exactly one of `env` and `file`"],
            ),
            (
                "[stages.s.grants.secrets]\ntoken = { env = \"PATH\" }\n",
                &["15:17: stage `s`, secret `token`: `PATH` is set by the host for every program"],
            ),
            (
                "[stages.s.grants.secrets]\ntoken = { env = \"TF_VAR_token\" }\n",
                &[
                    "13:7: stage `s`: secret `token` is delivered in `TF_VAR_token`, which `env` of the exec grant of `sh` also allows (`TF_*`): the plugin could set it itself",
                ],
            ),
            (
                "[stages.s.grants.secrets]\ntoken = { env = \"X\" }\nkey = { file = \"X\" }\n",
                &["15:17: stage `s`: secrets `key` and `token` are both delivered in `X`"],
            ),
            (
                "[stages.s.grants.secrets]\ntoken = { env = \"X\", programs = [\"shh\"] }\n",
                &[
                    "15:34: stage `s`, secret `token`: `programs` names `shh`, which no exec grant of the stage names",
                ],
            ),
            (
                "[stages.s.grants]\nenv = [\"DEPLOY_TOKEN\"]\n",
                &[
                    "15:8: stage `s`: `env` grants the plugin host variable `DEPLOY_TOKEN`, the source of secret `token`",
                ],
            ),
        ];
        let mut wrong = 0;
        for (grants, want) in table {
            let got = problems(&format!("{secrets}{}", stage(grants)));
            if got != *want {
                eprintln!("{grants:?}: {got:?}");
                wrong += 1;
            }
        }
        assert_eq!(wrong, 0);
    }

    #[test]
    fn no_plugin_gets_a_secrets_variable_through_with() {
        let got = problems(&format!(
            "[secrets.token]\nenv = \"DEPLOY_TOKEN\"\n{PLUGIN}[stages.s]\nplugin = \"p\"\nwith = {{ t = \"x ${{env.DEPLOY_TOKEN}}\", u = \"${{env.HOME}}\" }}\n"
        ));
        assert_eq!(
            got,
            [
                "9:14: stage `s`: `with` references `${env.DEPLOY_TOKEN}`, the source of secret `token`: its value would reach the plugin and everything it writes"
            ]
        );
        let got = problems(&format!(
            "[secrets.token]\nenv = \"T\"\n{PLUGIN}[stages.s]\nplugin = \"p\"\n[stages.s.grants.secrets]\ntoken = {{ env = \"T\" }}\n"
        ));
        assert_eq!(
            got,
            [
                "9:18: stage `s` grants secrets but no program and no `connect`: secrets reach only the programs a stage starts and the host's requests for it (a POST to `secret:<name>`), never its plugin"
            ]
        );
        // With a `connect` grant the host's own requests may use it (a
        // webhook URL), still never the plugin.
        let got = problems(&format!(
            "[secrets.token]\nenv = \"T\"\n{PLUGIN}[stages.s]\nplugin = \"p\"\n[stages.s.grants]\nconnect = [\"127.0.0.1:9\"]\n[stages.s.grants.secrets]\ntoken = {{ env = \"T\", programs = [] }}\n"
        ));
        assert!(got.is_empty(), "{got:?}");
    }
}
