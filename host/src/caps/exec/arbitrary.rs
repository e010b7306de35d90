//! Which exec grants amount to running arbitrary code inside the sandbox:
//! what `capstan audit` marks, so that a reviewer sees at once that a
//! grant's real bound is the sandbox (its file rules, network and limits),
//! not the grant's argument patterns.
//!
//! Pure: only the grant is looked at, never the program file. Programs are
//! known by the basename of the grant's `program`, from a small table
//! ([`TABLE`]) of shells, interpreters, programs that start other programs,
//! and tools that run what a configuration says. A program not in the
//! table is not judged (an empty answer means "none found", not "safe").
//!
//! `writable_config`: whether the plugin can write the files the program
//! reads its configuration or script from. Children start with `HOME` = the
//! stage work dir and, by default, their working directory there too, and
//! the plugin can always write its work dir: `capstan audit` passes `true`.
//! `false` is for a caller that knows better (and for the tests).

use std::path::{Component, Path, PathBuf};

use wildmatch::WildMatch;

use crate::caps::env;
use crate::pipeline::ExecGrant;

/// How a kind of program can be made to run code the plugin chooses.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Runs code given inline (`code` flags, or the first operand when
    /// `inline`), from a script file (`script` flags, or the first operand),
    /// or, when `stdin` and given neither, from stdin (the plugin writes
    /// the child's stdin). `value` flags take the next argument as data.
    Interpreter {
        code: &'static [&'static str],
        script: &'static [&'static str],
        value: &'static [&'static str],
        inline: bool,
        stdin: bool,
    },
    /// Starts the program named by its first operand (after `skip`
    /// operands), or runs the command line given to a `code` flag.
    Runner {
        code: &'static [&'static str],
        value: &'static [&'static str],
        skip: usize,
    },
    /// `find`: `-exec` and friends start a program.
    Find,
    /// `ansible`: modules that run commands on its targets.
    Ansible,
    /// Runs what a configuration in its working directory or `HOME` says.
    Config { reads: &'static str },
}

const SHELL: Kind = Kind::Interpreter {
    code: &["-c"],
    script: &[],
    value: &["-o", "+o", "-O", "+O"],
    inline: false,
    stdin: true,
};

/// Program name patterns (a `*` matches any text) and their kind.
const TABLE: &[(&[&str], Kind)] = &[
    (
        &["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish"],
        SHELL,
    ),
    (
        &["python", "python2*", "python3*", "pypy*"],
        Kind::Interpreter {
            code: &["-c", "-m"],
            script: &[],
            value: &["-W", "-X"],
            inline: false,
            stdin: true,
        },
    ),
    (
        &["perl", "perl5*"],
        Kind::Interpreter {
            code: &["-e", "-E"],
            script: &[],
            value: &["-I", "-M", "-m"],
            inline: false,
            stdin: true,
        },
    ),
    (
        &["ruby", "ruby*"],
        Kind::Interpreter {
            code: &["-e"],
            script: &["-r"],
            value: &["-I"],
            inline: false,
            stdin: true,
        },
    ),
    (
        &["node", "nodejs"],
        Kind::Interpreter {
            code: &["-e", "--eval", "-p", "--print"],
            script: &["-r", "--require", "--import"],
            value: &[],
            inline: false,
            stdin: true,
        },
    ),
    (
        &["php", "php*", "lua", "lua*", "Rscript", "tclsh", "tclsh*"],
        Kind::Interpreter {
            code: &["-r", "-e"],
            script: &[],
            value: &[],
            inline: false,
            stdin: true,
        },
    ),
    (
        &["awk", "gawk", "mawk", "nawk"],
        Kind::Interpreter {
            code: &["-e", "--source"],
            script: &["-f", "--file"],
            value: &["-F", "-v", "--assign", "--field-separator"],
            inline: true,
            stdin: false,
        },
    ),
    (
        // GNU sed's `e` command runs shell commands.
        &["sed", "gsed"],
        Kind::Interpreter {
            code: &["-e", "--expression"],
            script: &["-f", "--file"],
            value: &["-l", "--line-length"],
            inline: true,
            stdin: false,
        },
    ),
    (
        &["env"],
        Kind::Runner {
            code: &["-S", "--split-string"],
            value: &["-u", "--unset", "-C", "--chdir"],
            skip: 0,
        },
    ),
    (
        &["nice", "nohup", "setsid", "stdbuf", "busybox"],
        Kind::Runner {
            code: &[],
            value: &["-n", "--adjustment"],
            skip: 0,
        },
    ),
    (
        &["ionice"],
        Kind::Runner {
            code: &[],
            value: &["-c", "--class", "-n", "--classdata"],
            skip: 0,
        },
    ),
    (
        &["strace", "ltrace"],
        Kind::Runner {
            code: &[],
            value: &["-e", "-o", "-p", "-s", "-u", "-E"],
            skip: 0,
        },
    ),
    (
        &["xargs"],
        Kind::Runner {
            code: &[],
            value: &["-I", "-n", "-P", "-d", "-a", "-E", "-L", "-s"],
            skip: 0,
        },
    ),
    (
        &["timeout", "taskset"],
        Kind::Runner {
            code: &[],
            value: &["-s", "--signal", "-k", "--kill-after"],
            skip: 1,
        },
    ),
    (
        &["flock"],
        Kind::Runner {
            code: &["-c", "--command"],
            value: &["-w", "--timeout", "-E"],
            skip: 1,
        },
    ),
    (&["find"], Kind::Find),
    (&["ansible"], Kind::Ansible),
    (
        &["ansible-playbook"],
        Kind::Config {
            reads: "reads ansible.cfg (which adds callback, action and module plugins) from its working directory and HOME, and plugins next to the playbook",
        },
    ),
    (
        &["terraform", "tofu"],
        Kind::Config {
            reads: "runs the configuration in its working directory (`external` data sources, `local-exec` provisioners, `file()`) and reads .terraformrc (provider overrides) from HOME",
        },
    ),
    (
        &["packer"],
        Kind::Config {
            reads: "runs the template it is given (`shell-local` provisioners and post-processors) and loads plugins from HOME",
        },
    ),
    (
        &["make", "gmake"],
        Kind::Config {
            reads: "runs the recipes of the Makefile in its working directory",
        },
    ),
    (
        &["just"],
        Kind::Config {
            reads: "runs the recipes of the justfile in its working directory",
        },
    ),
    (
        &["npm", "npx", "yarn", "pnpm"],
        Kind::Config {
            reads: "runs the scripts of package.json in its working directory and reads .npmrc from it and HOME",
        },
    ),
    (
        &["cargo"],
        Kind::Config {
            reads: "runs build scripts and reads .cargo/config.toml in its working directory and HOME",
        },
    ),
    (
        &["git"],
        Kind::Config {
            reads: "runs hooks and commands from the repository's config in its working directory (`core.fsmonitor`, `core.sshCommand`) and from HOME",
        },
    ),
];

/// Environment variables that make (almost) any program load code from a
/// file the plugin names: with a writable work dir, code it wrote.
const CODE_ENV: &[&str] = &[
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "BASH_ENV",
    "ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "PERL5LIB",
    "PERL5OPT",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "GIT_SSH_COMMAND",
    "GIT_CONFIG_GLOBAL",
    "TF_CLI_CONFIG_FILE",
    "ANSIBLE_CONFIG",
];

/// Flags after which an interpreter runs no program at all.
const TERMINAL: &[&str] = &["--version", "-V", "--help", "-h"];

/// Why `grant` amounts to running arbitrary code inside the sandbox (empty:
/// no reason found). See the module documentation for `writable_config`.
pub fn arbitrary_code(grant: &ExecGrant, writable_config: bool) -> Vec<String> {
    arbitrary_code_in(grant, writable_config, &[])
}

/// [`arbitrary_code`], where a fixed absolute script path under one of
/// `writable` (directories the stage can write, canonical) is open too.
pub fn arbitrary_code_in(
    grant: &ExecGrant,
    writable_config: bool,
    writable: &[PathBuf],
) -> Vec<String> {
    let ctx = Context {
        writable_config,
        writable,
    };
    let mut reasons = ctx.program(&basename(&grant.program), &grant.args);
    if writable_config {
        let names: Vec<&str> = CODE_ENV
            .iter()
            .copied()
            .filter(|name| grant.env.iter().any(|p| env::matches(p, name)))
            .collect();
        if !names.is_empty() {
            reasons.push(format!(
                "the plugin may set {} (they load code from files it can write)",
                names.join(", ")
            ));
        }
    }
    reasons
}

fn basename(program: &str) -> String {
    Path::new(program)
        .file_name()
        .map_or_else(|| program.to_string(), |n| n.to_string_lossy().into_owned())
}

fn kind(name: &str) -> Option<Kind> {
    TABLE
        .iter()
        .find(|(names, _)| names.iter().any(|n| WildMatch::new(n).matches(name)))
        .map(|(_, kind)| *kind)
}

/// A pattern that takes more than one fixed text.
fn open(pattern: &str) -> bool {
    pattern == "**" || pattern.contains(['*', '?'])
}

/// Whether a pattern can match any of `texts`.
fn can_be(pattern: &str, texts: &[&str]) -> bool {
    pattern == "**"
        || pattern
            .split('|')
            .any(|alt| texts.iter().any(|t| WildMatch::new(alt).matches(t)))
}

/// Whether a fixed pattern is (one of) `flags`.
fn is(pattern: &str, flags: &[&str]) -> bool {
    pattern.split('|').any(|alt| flags.contains(&alt))
}

struct Context<'a> {
    writable_config: bool,
    writable: &'a [PathBuf],
}

impl Context<'_> {
    fn program(&self, name: &str, args: &[String]) -> Vec<String> {
        match kind(name) {
            None => Vec::new(),
            Some(Kind::Interpreter {
                code,
                script,
                value,
                inline,
                stdin,
            }) => self.interpreter(name, args, code, script, value, inline, stdin),
            Some(Kind::Runner { code, value, skip }) => self.runner(name, args, code, value, skip),
            Some(Kind::Find) => self.find(args),
            Some(Kind::Ansible) => self.ansible(args),
            Some(Kind::Config { reads }) => {
                // A configuration the plugin writes covers whatever open
                // arguments could add.
                if self.writable_config {
                    vec![format!("{name} {reads}, which the plugin can write")]
                } else if args.iter().any(|a| a == "**") {
                    vec![format!(
                        "{name} with open arguments (`**`): they can name any configuration or option"
                    )]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// A script path the plugin can write: relative (resolved in a working
    /// directory the plugin chooses and can write) or under a writable dir.
    fn writable_script(&self, path: &str) -> bool {
        let path = Path::new(path);
        if path.is_relative() {
            return self.writable_config;
        }
        path.components().any(|c| c == Component::ParentDir)
            || self.writable.iter().any(|w| path.starts_with(w))
    }

    #[allow(clippy::too_many_arguments)]
    fn interpreter(
        &self,
        name: &str,
        args: &[String],
        code: &[&str],
        script: &[&str],
        value: &[&str],
        inline: bool,
        stdin: bool,
    ) -> Vec<String> {
        let mut i = 0;
        while i < args.len() {
            let p = args[i].as_str();
            if p == "**" {
                return vec![format!(
                    "{name} with open arguments (`**`): they can be code"
                )];
            }
            if open(p) {
                return vec![format!(
                    "{name} with an open argument {} (`{p}`): it can be code or a script to run",
                    i + 1
                )];
            }
            let next = args.get(i + 1).map(String::as_str);
            let code_flag = is(p, code) || in_cluster(p, code, value);
            if code_flag {
                return match next {
                    Some(n) if open(n) => {
                        vec![format!("{name} {p} with open arguments (`{n}`)")]
                    }
                    // `-m module`: a module name, found on its path, whose
                    // first entry (like for `-c` code) is the working directory.
                    _ if name.starts_with("py")
                        && self.writable_config
                        && !args.iter().any(|a| is(a, &["-I", "-P"])) =>
                    {
                        vec![format!(
                            "{name} {p} imports modules from its working directory first, which the plugin can write (add `-I` to the grant's args)"
                        )]
                    }
                    _ => Vec::new(),
                };
            }
            if is(p, script) {
                return match next {
                    Some(n) if open(n) => {
                        vec![format!("{name} {p} with an open script (`{n}`)")]
                    }
                    Some(n) if self.writable_script(n) => vec![format!(
                        "{name} runs the script `{n}`, which the plugin can write"
                    )],
                    _ => Vec::new(),
                };
            }
            if is(p, value) {
                i += 2;
                continue;
            }
            if is(p, TERMINAL) {
                return Vec::new();
            }
            if p == "-" {
                break;
            }
            if p.starts_with('-') || p.starts_with('+') {
                i += 1;
                continue;
            }
            // The first operand: inline code (awk, sed), or the script.
            if !inline && p.split('|').any(|alt| self.writable_script(alt)) {
                return vec![format!(
                    "{name} runs the script `{p}`, which the plugin can write"
                )];
            }
            return Vec::new();
        }
        if stdin {
            vec![format!(
                "{name} reads its program from stdin, which the plugin supplies"
            )]
        } else {
            Vec::new()
        }
    }

    fn runner(
        &self,
        name: &str,
        args: &[String],
        code: &[&str],
        value: &[&str],
        skip: usize,
    ) -> Vec<String> {
        let mut skip = skip;
        let mut i = 0;
        while i < args.len() {
            let p = args[i].as_str();
            if open(p) {
                return vec![format!(
                    "{name} with an open argument {} (`{p}`): it can start any program",
                    i + 1
                )];
            }
            if is(p, code) {
                return match args.get(i + 1) {
                    Some(n) if open(n) => {
                        vec![format!("{name} {p} with an open command line (`{n}`)")]
                    }
                    _ => Vec::new(),
                };
            }
            if is(p, value) {
                i += 2;
                continue;
            }
            if p.starts_with('-') || (name == "env" && p.contains('=')) {
                i += 1;
                continue;
            }
            if skip > 0 {
                skip -= 1;
                i += 1;
                continue;
            }
            // The program it starts: judged on its own. `xargs` appends
            // arguments read from stdin, which the plugin supplies.
            let mut rest: Vec<String> = args[i + 1..].to_vec();
            if name == "xargs" {
                rest.push("**".into());
            }
            return p
                .split('|')
                .flat_map(|program| self.program(&basename(program), &rest))
                .map(|r| format!("via {name}: {r}"))
                .collect();
        }
        Vec::new()
    }

    fn find(&self, args: &[String]) -> Vec<String> {
        const EXEC: &[&str] = &["-exec", "-execdir", "-ok", "-okdir"];
        for (i, p) in args.iter().enumerate() {
            if p == "**" {
                return vec![
                    "find with open arguments (`**`): `-exec` can start any program".into(),
                ];
            }
            if !can_be(p, EXEC) {
                continue;
            }
            if open(p) {
                return vec![format!(
                    "find with an open argument {} (`{p}`) that can be `-exec`",
                    i + 1
                )];
            }
            let Some(program) = args.get(i + 1) else {
                continue;
            };
            if open(program) || program == "{}" {
                return vec![format!("find {p} with an open program (`{program}`)")];
            }
            // The found names (`{}`) vary: open arguments of that program.
            let rest: Vec<String> = args[i + 2..]
                .iter()
                .take_while(|a| !matches!(a.as_str(), ";" | "+"))
                .map(|a| {
                    if a.contains("{}") {
                        "*".into()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            let reasons: Vec<String> = program
                .split('|')
                .flat_map(|prog| self.program(&basename(prog), &rest))
                .map(|r| format!("via find {p}: {r}"))
                .collect();
            if !reasons.is_empty() {
                return reasons;
            }
        }
        Vec::new()
    }

    fn ansible(&self, args: &[String]) -> Vec<String> {
        const MODULE: &[&str] = &["-m", "--module-name"];
        const COMMANDS: &[&str] = &["command", "shell", "raw", "script"];
        let mut reasons = Vec::new();
        if args.iter().any(|a| a == "**") {
            reasons.push(
                "ansible with open arguments (`**`): `-m shell` runs any command on its targets"
                    .to_string(),
            );
        } else {
            let module_set = args.iter().any(|a| !open(a) && is(a, MODULE));
            for (i, p) in args.iter().enumerate() {
                let Some(module) = args.get(i + 1) else {
                    continue;
                };
                if can_be(p, MODULE) && can_be(module, COMMANDS) {
                    let which: Vec<&str> = COMMANDS
                        .iter()
                        .copied()
                        .filter(|m| can_be(module, &[m]))
                        .collect();
                    reasons.push(format!(
                        "ansible allows `{p} {module}`: module {} runs any command on its targets",
                        which.join(", ")
                    ));
                    break;
                }
            }
            if !module_set && args.iter().any(|a| can_be(a, &["-a", "--args"])) {
                reasons.push(
                    "ansible runs module `command` when no `-m` is given, and `-a` can be any command"
                        .into(),
                );
            }
        }
        if self.writable_config {
            reasons.push(
                "ansible reads ansible.cfg (which adds callback, action and module plugins) from its working directory and HOME, which the plugin can write"
                    .into(),
            );
        }
        reasons
    }
}

/// Whether `flag` is a cluster of one-letter flags (`-euc`, `-le`) that
/// holds a one-letter `code` flag. A cluster that starts with a `value`
/// flag (`-Mstrict`) is that flag with its value glued on.
fn in_cluster(flag: &str, code: &[&str], value: &[&str]) -> bool {
    fn letter<'a>(f: &&'a str) -> Option<&'a str> {
        f.strip_prefix('-').filter(|l| l.len() == 1)
    }
    let code: Vec<&str> = code.iter().filter_map(letter).collect();
    let value: Vec<&str> = value.iter().filter_map(letter).collect();
    flag.split('|').any(|alt| {
        alt.strip_prefix('-').is_some_and(|letters| {
            letters.len() > 1
                && letters.chars().all(|c| c.is_ascii_alphabetic())
                && !value.iter().any(|v| letters.starts_with(v))
                && code.iter().any(|c| letters.contains(c))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(program: &str, args: &[&str], env: &[&str]) -> ExecGrant {
        let mut text = format!("program = {program:?}\nargs = {args:?}\n");
        text.push_str(&format!("env = {env:?}\n"));
        toml::from_str(&text).unwrap()
    }

    /// (program, args, writable_config, a reason must contain this; "" = no reason).
    #[rustfmt::skip]
    const CASES: &[(&str, &[&str], bool, &str)] = &[
        // Shells.
        ("sh", &["-c", "**"], false, "sh -c with open arguments (`**`)"),
        ("sh", &["-c", "*"], false, "sh -c with open arguments (`*`)"),
        ("/bin/bash", &["-euc", "*"], false, "bash -euc with open"),
        ("sh", &["-c", "echo hi"], false, ""),
        ("sh", &["-c", "echo \"$1\"", "sh", "*"], false, ""),
        ("sh", &["**"], false, "open arguments (`**`)"),
        ("sh", &["*"], false, "open argument 1"),
        ("sh", &[], false, "reads its program from stdin"),
        ("sh", &["-s"], false, "stdin"),
        ("bash", &["-"], false, "stdin"),
        ("sh", &["/opt/tools/check.sh", "*"], true, ""),
        ("sh", &["check.sh"], true, "runs the script `check.sh`"),
        ("sh", &["check.sh"], false, ""),
        ("sh", &["/opt/../tmp/x.sh"], false, "which the plugin can write"),
        ("bash", &["--version"], false, ""),
        ("zsh", &["-o", "errexit", "-c", "*"], false, "zsh -c with open"),
        // Interpreters.
        ("python3.12", &["-c", "*"], false, "python3.12 -c with open"),
        ("python3", &["-c", "print(1)"], true, "imports modules from its working directory"),
        ("python3", &["-I", "-c", "print(1)"], true, ""),
        ("python3", &["-m", "*"], false, "-m with open"),
        ("python3", &["/usr/lib/tool.py", "**"], true, ""),
        ("perl", &["-e", "*"], false, "perl -e with open"),
        ("perl", &["-le", "print 1"], true, ""),
        ("perl", &["-Mstrict", "-e", "*"], false, "perl -e with open"),
        ("perl", &["-ne", "*"], false, "perl -ne with open"),
        ("ruby", &["-e", "*"], false, "ruby -e"),
        ("node", &["--eval", "**"], false, "node --eval with open"),
        ("node", &["-r", "*", "/srv/app.js"], false, "node -r with an open script"),
        ("awk", &["{print $1}", "*"], false, ""),
        ("awk", &["*"], false, "open argument 1"),
        ("gawk", &["-f", "prog.awk", "*"], true, "runs the script `prog.awk`"),
        ("awk", &["-F", ":", "{print $1}", "/etc/passwd"], false, ""),
        ("sed", &["-n", "1p", "*"], false, ""),
        ("sed", &["-e", "*"], false, "sed -e with open"),
        // Programs that start programs.
        ("env", &["**"], false, "env with an open argument 1"),
        ("env", &["A=1", "sh", "-c", "*"], false, "via env: sh -c with open"),
        ("env", &["A=1", "stat", "*"], false, ""),
        ("timeout", &["10", "sh"], false, "via timeout: sh reads its program from stdin"),
        ("xargs", &["sh", "-c", "echo \"$@\"", "sh"], false, ""),
        ("xargs", &["rm", "-f"], false, ""),
        ("xargs", &["sh"], false, "via xargs: sh with open arguments"),
        ("flock", &["/w/lock", "-c", "*"], false, "flock -c with an open command line"),
        ("find", &["*", "-name", "*.tf"], false, "open argument 1 (`*`) that can be `-exec`"),
        ("find", &["/srv", "-name", "*.tf"], false, ""),
        ("find", &["/srv", "**"], false, "find with open arguments"),
        ("find", &["/srv", "-exec", "stat", "{}", ";"], false, ""),
        ("find", &["/srv", "-exec", "sh", "{}", ";"], false, "via find -exec: sh with an open argument"),
        ("find", &["/srv", "-exec", "*", ";"], false, "find -exec with an open program"),
        // Configuration-driven tools.
        ("ansible", &["all", "-m", "shell", "-a", "*"], false, "module shell runs any command"),
        ("ansible", &["all", "-m", "ping|command", "**"], false, "ansible with open arguments"),
        ("ansible", &["all", "-m", "*"], false, "module command, shell, raw, script"),
        ("ansible", &["all", "-m", "ping"], false, ""),
        ("ansible", &["all", "-a", "*"], false, "runs module `command` when no `-m`"),
        ("ansible", &["all", "-m", "ping"], true, "ansible reads ansible.cfg"),
        ("ansible-playbook", &["site.yml"], false, ""),
        ("ansible-playbook", &["**"], false, "ansible-playbook with open arguments"),
        ("ansible-playbook", &["/srv/site.yml"], true, "from its working directory and HOME"),
        ("terraform", &["init|plan"], false, ""),
        ("terraform", &["plan"], true, "terraform runs the configuration"),
        ("/usr/local/bin/tofu", &["apply"], true, "`external` data sources"),
        ("packer", &["build", "**"], true, "`shell-local` provisioners"),
        ("make", &["-C", "/srv"], true, "Makefile"),
        ("cargo", &["build"], true, "build scripts"),
        ("git", &["status"], true, "core.fsmonitor"),
        // Not in the table: not judged.
        ("stat", &["-L", "-c", "%a %n", "--", "**"], true, ""),
        ("echo", &["*"], true, ""),
        ("terraformer", &["**"], true, ""),
    ];

    #[test]
    fn the_table() {
        let mut wrong = Vec::new();
        for (program, args, writable, expected) in CASES {
            let got = arbitrary_code(&grant(program, args, &[]), *writable);
            let right = if expected.is_empty() {
                got.is_empty()
            } else {
                got.iter().any(|r| r.contains(expected))
            };
            if !right {
                wrong.push(format!(
                    "{program} {args:?} (writable {writable}): expected `{expected}`, got {got:?}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn code_loading_variables_are_named_when_the_plugin_can_write_files() {
        let g = grant("stat", &["*"], &["LD_*", "TF_VAR_*", "PYTHONPATH"]);
        assert_eq!(
            arbitrary_code(&g, true),
            vec![
                "the plugin may set LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, PYTHONPATH (they load code from files it can write)"
                    .to_string()
            ]
        );
        assert!(arbitrary_code(&g, false).is_empty());
        assert!(arbitrary_code(&grant("stat", &["*"], &["TF_VAR_*"]), true).is_empty());
    }

    #[test]
    fn a_fixed_script_in_a_writable_dir_is_open() {
        let g = grant("sh", &["/srv/rw/deploy.sh"], &[]);
        let writable = [PathBuf::from("/srv/rw")];
        assert!(arbitrary_code_in(&g, false, &writable)[0].contains("`/srv/rw/deploy.sh`"));
        assert!(arbitrary_code_in(&g, false, &[PathBuf::from("/srv/other")]).is_empty());
    }
}
