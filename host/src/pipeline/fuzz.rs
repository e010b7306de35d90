//! A bounded fuzz test of the pipeline loader, run by `cargo test`: the
//! example pipelines and a seed using every feature, mutated by a seeded
//! generator (byte flips, lost and repeated lines, `needs` shuffled or
//! pointing at their own stage, unknown plugins, bad paths, invalid UTF-8,
//! huge numbers, deep nesting, odd references, misspelt `with` keys, spliced
//! files), loaded one by one; those that load are also prepared (plugin
//! loaded, `with` checked against its schema, grants and programs checked).
//! Every input must end in a pipeline or in problems that each have a line
//! and column, each once, never in a panic (or a stack overflow).
//!
//! The number of cases is fixed, not the time (machines are noisy):
//! `CAPSTAN_FUZZ_CASES` (default 3000), `CAPSTAN_FUZZ_PREPARE_CASES` (default
//! 400) and `CAPSTAN_FUZZ_SEED` change them, e.g. for a longer run:
//! `CAPSTAN_FUZZ_CASES=200000 cargo test -p capstan --lib pipeline::fuzz`.
//! A failure names the seed of the case, and shows the input.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use super::{Diagnostics, Pipeline};

/// A pipeline with every kind of entry the loader checks.
const FULL: &str = r#"[pipeline]
name = "full"
description = "every feature"
environments = ["dev", "staging", "production"]
protected = ["production"]
concurrency = 2

[defaults]
timeout = "5m"
memory = "128MiB"
max_output = "8MiB"

[plugins.tool]
path = "plugin.wasm"
sha256 = "PIN"

[plugins.other]
path = "plugin.wasm"

[stages.build]
plugin = "tool"
timeout = "90s"
with = { message = "build ${run.id} in ${run.environment}", count = 3, list = [1, 2.5, true, 1979-05-27T07:32:00Z], nested = { a = { b = "${pipeline.dir}" } } }

[[stages.build.grants.exec]]
program = "sh"
args = ["-c", "echo *|printf", "**"]
env = ["HOME", "LC_*"]
timeout = "1m"

[stages.build.grants]
read = ["ro"]
write = ["rw"]
env = ["PATH", "CAPSTAN_*"]
connect = ["127.0.0.1:*", "[::1]:8080", "example.com:443", "*:22"]

[stages.plan]
plugin = "other"
needs = ["build"]
environments = ["dev", "production"]
on_failure = "rollback"
memory = "64MiB"
max_output = "1MiB"

[stages.plan.with]
id = "${stages.build.outputs.id}"
text = "literal $${not a reference} and ${env.HOME} and ${stage.work_dir}"
items = ["${stages.build.outputs.a}", { deep = "${stages.build.outputs.b}" }]

[stages.gate]
plugin = "tool"
needs = ["plan", "build"]
with.subject = "approve ${stages.plan.outputs.summary}"
with.policy = { dev = "auto", production = { mode = "manual", required = 2 } }

[stages.gate.grants]
approval = true

[rollback]
reuse = ["build"]
"#;

const SEEDS: &[&str] = &[
    FULL,
    include_str!("../../../examples/hello/pipeline.toml"),
    include_str!("../../../examples/golden-image/pipeline.toml"),
    concat!(
        include_str!("../../../examples/golden-image/pipeline.toml"),
        include_str!("../../../examples/custom-stage/pipeline-snippet.toml")
    ),
];

/// Directories the seeds grant, created beside the pipeline file so that
/// unmutated seeds load and mutants reach the deepest checks.
const DIRS: &[&str] = &[
    "ro",
    "rw",
    "packer",
    "infrastructure",
    "ansible",
    "work/registry",
    "work/state",
    "work/targets",
];

/// Paths a mutant may put where a path goes.
const BAD_PATHS: &[&str] = &[
    "",
    "/",
    ".",
    "/dev/zero",
    "/dev/null",
    "/dev/stdin",
    "/proc/self/mem",
    "fifo",
    "ro",
    "missing/plugin.wasm",
    "../../../../../../../../../../",
    "plugin.wasm/..",
    "pipeline.toml",
    "\\u0000",
    "~/x",
    "ro/../../../../etc",
];

/// Values a mutant may put where a number, size or duration goes.
const HUGE: &[&str] = &[
    "99999999999999999999",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "-1",
    "0",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "\"18446744073709551615 EiB\"",
    "\"99999999999999999999 PiB\"",
    "\"1e300 B\"",
    "\"99999999999999999999999h\"",
    "\"584942417355years\"",
    "\"366days\"",
    "\"0s\"",
    "\"-1s\"",
    "\"\"",
];

/// Texts a mutant may put into a `with` string.
const REFERENCES: &[&str] = &[
    "${",
    "${}",
    "$${",
    "$$${run.id}",
    "${stages.}",
    "${stages.build.outputs}",
    "${stages.build.outputs.x.y}",
    "${stages.nope.outputs.x}",
    "${stages.plan.outputs.x}",
    "${env.}",
    "${run.id",
    "${run.id}}",
    "${ run.id }",
    "${stages.é.outputs.ß}",
    "${stages.${run.id}.outputs.x}",
];

struct Mutator {
    rng: fastrand::Rng,
}

impl Mutator {
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.usize(..from.len())]
    }

    fn mutate(&mut self, input: &mut Vec<u8>) {
        for _ in 0..self.rng.usize(1..=4) {
            match self.rng.u8(..16) {
                0 => self.flip_bytes(input),
                1 => self.lines(input, |m, lines| {
                    let i = m.rng.usize(..lines.len());
                    lines.remove(i);
                }),
                2 => self.lines(input, |m, lines| {
                    let (i, j) = (m.rng.usize(..lines.len()), m.rng.usize(..=lines.len()));
                    let line = lines[i].clone();
                    lines.insert(j, line);
                }),
                3 => self.needs(input, false),
                4 => self.needs(input, true),
                5 => self.replace_value(input, "plugin", |m| {
                    format!(
                        "\"{}\"",
                        m.pick(&["nope", "tol", "", "tool ", "Tool", "hello"])
                    )
                }),
                6 => {
                    let key = self.pick(&["path", "read", "write", "program"]);
                    self.replace_value(input, key, |m| {
                        let path = m.pick(BAD_PATHS);
                        if key == "read" || key == "write" {
                            format!("[\"{path}\"]")
                        } else {
                            format!("\"{path}\"")
                        }
                    })
                }
                7 => {
                    let at = self.rng.usize(..=input.len());
                    let bad = self.pick(&["\u{ff}", "\u{c3}", "\u{ed}\u{a0}\u{80}", "\u{80}"]);
                    let bytes: Vec<u8> = bad.chars().map(|c| c as u8).collect();
                    input.splice(at..at, bytes);
                }
                8 => {
                    let key = self.pick(&[
                        "timeout",
                        "memory",
                        "max_output",
                        "concurrency",
                        "count",
                        "required",
                    ]);
                    self.replace_value(input, key, |m| m.pick(HUGE).to_string());
                }
                9 => self.insert_line(input, |m| {
                    let key = m.pick(&["timeout", "memory", "max_output", "concurrency"]);
                    format!("{key} = {}", m.pick(HUGE))
                }),
                10 => self.insert_line(input, |m| {
                    let depth = m.rng.usize(1..400);
                    match m.rng.u8(..4) {
                        0 => format!("with = {}{}", "[".repeat(depth), "]".repeat(depth)),
                        1 => format!("with = {}1{}", "{a=".repeat(depth), "}".repeat(depth)),
                        2 => format!("with.{} = 1", vec!["a"; depth].join(".")),
                        _ => format!("[{}]", vec!["stages"; depth].join(".")),
                    }
                }),
                11 => {
                    self.replace_value(input, "message", |m| format!("\"{}\"", m.pick(REFERENCES)))
                }
                12 => {
                    let other = self.pick(SEEDS).as_bytes();
                    let (a, b) = (
                        self.rng.usize(..=other.len()),
                        self.rng.usize(..=other.len()),
                    );
                    let at = self.rng.usize(..=input.len());
                    input.splice(at..at, other[a.min(b)..a.max(b)].iter().copied());
                }
                14 => self.with_keys(input),
                15 => self.replace_value(input, "message", |m| {
                    m.pick(&[
                        "3",
                        "[\"a\", \"${run.id}\"]",
                        "{ a = 1 }",
                        "true",
                        "\"\"",
                        "1979-05-27",
                    ])
                    .to_string()
                }),
                _ => self.insert_line(input, |m| {
                    let names = [
                        "build", "plan", "gate", "greet", "answer", "a", "../x", "-x", "",
                    ];
                    let name = m.pick(&names);
                    match m.rng.u8(..4) {
                        0 => format!("[stages.\"{name}\"]\nplugin = \"tool\""),
                        1 => format!("[plugins.\"{name}\"]\npath = \"{}\"", m.pick(BAD_PATHS)),
                        2 => format!(
                            "[[stages.{}.grants.exec]]\nprogram = \"{name}\"",
                            m.pick(&names[..5])
                        ),
                        _ => format!("[rollback]\nreuse = [\"{name}\"]"),
                    }
                }),
            }
        }
    }

    fn flip_bytes(&mut self, input: &mut [u8]) {
        if input.is_empty() {
            return;
        }
        for _ in 0..self.rng.usize(1..8) {
            let i = self.rng.usize(..input.len());
            input[i] = match self.rng.u8(..3) {
                0 => input[i] ^ (1 << self.rng.u8(..8)),
                1 => self
                    .pick(&["\"", "[", "]", "{", "}", "=", ".", "\n", "$", "\\", "#"])
                    .as_bytes()[0],
                _ => self.rng.u8(..),
            };
        }
    }

    /// Edit the text line by line (lossily: invalid UTF-8 is flipped in by
    /// other mutations).
    fn lines(&mut self, input: &mut Vec<u8>, edit: impl FnOnce(&mut Self, &mut Vec<String>)) {
        let mut lines: Vec<String> = String::from_utf8_lossy(input)
            .lines()
            .map(str::to_string)
            .collect();
        if lines.is_empty() {
            return;
        }
        edit(self, &mut lines);
        *input = (lines.join("\n") + "\n").into_bytes();
    }

    fn insert_line(&mut self, input: &mut Vec<u8>, make: impl FnOnce(&mut Self) -> String) {
        self.lines(input, |m, lines| {
            let at = m.rng.usize(..=lines.len());
            let line = make(m);
            lines.insert(at, line);
        });
    }

    /// Replace the value of one `key = …` line.
    fn replace_value(
        &mut self,
        input: &mut Vec<u8>,
        key: &str,
        value: impl FnOnce(&mut Self) -> String,
    ) {
        self.lines(input, |m, lines| {
            let found: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].trim_start().starts_with(&format!("{key} =")))
                .collect();
            if found.is_empty() {
                return;
            }
            let i = found[m.rng.usize(..found.len())];
            lines[i] = format!("{key} = {}", value(m));
        });
    }

    /// Misspell, add or drop a key of an inline `with` table.
    fn with_keys(&mut self, input: &mut Vec<u8>) {
        self.lines(input, |m, lines| {
            let found: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].starts_with("with = {"))
                .collect();
            if found.is_empty() {
                return;
            }
            let i = found[m.rng.usize(..found.len())];
            let line = &lines[i];
            lines[i] = match m.rng.u8(..3) {
                0 => line.replacen(
                    "message",
                    m.pick(&["mesage", "Message", "messages", "msg"]),
                    1,
                ),
                1 => line.replacen(
                    "{ ",
                    &format!(
                        "{{ {} = {}, ",
                        m.pick(&["extra", "mesage", "a.b"]),
                        m.pick(&["1", "\"${run.id}\"", "[]"])
                    ),
                    1,
                ),
                _ => "with = {}".into(),
            };
        });
    }

    /// Point `needs` of a stage at other stages, or at itself.
    fn needs(&mut self, input: &mut Vec<u8>, itself: bool) {
        self.lines(input, |m, lines| {
            let headers: Vec<(usize, String)> = lines
                .iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    let name = l.trim().strip_prefix("[stages.")?.strip_suffix(']')?;
                    (!name.contains('.')).then(|| (i, name.to_string()))
                })
                .collect();
            if headers.is_empty() {
                return;
            }
            let (at, stage) = headers[m.rng.usize(..headers.len())].clone();
            let names: Vec<String> = if itself {
                vec![stage.clone()]
            } else {
                (0..m.rng.usize(1..4))
                    .map(|_| headers[m.rng.usize(..headers.len())].1.clone())
                    .collect()
            };
            let needs = format!(
                "needs = [{}]",
                names
                    .iter()
                    .map(|n| format!("\"{n}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            // The stage's own `needs` line if it has one, else a new one.
            let end = lines[at + 1..]
                .iter()
                .position(|l| l.starts_with('['))
                .map_or(lines.len(), |p| at + 1 + p);
            match (at + 1..end).find(|&i| lines[i].trim_start().starts_with("needs")) {
                Some(i) => lines[i] = needs,
                None => lines.insert(at + 1, needs),
            }
        });
    }
}

/// A directory holding what the seeds name: a plugin file, granted
/// directories, a FIFO.
fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plugin.wasm"), b"\0asm not really").unwrap();
    for d in DIRS {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let file = dir.path().join("pipeline.toml");
    (dir, file)
}

/// A seed as the sandbox holds it: plugin paths at its plugin file, the pin
/// its digest.
fn seed(text: &str) -> String {
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"\0asm not really"));
    text.lines()
        .map(|l| {
            if l.starts_with("path = ") {
                "path = \"plugin.wasm\"".to_string()
            } else {
                l.replace("PIN", &digest)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Load `input`; a panic or an unlocated problem fails the test.
fn check(file: &Path, input: &[u8], what: &str) -> Result<Pipeline, Diagnostics> {
    let loaded = catch_unwind(AssertUnwindSafe(|| Pipeline::from_bytes(file, input)))
        .unwrap_or_else(|_| {
            panic!(
                "the loader panicked on {what}:\n{}",
                String::from_utf8_lossy(input)
            )
        });
    match &loaded {
        Ok(p) => {
            // What the rest of the host relies on.
            assert!(!p.environments.is_empty(), "{what}");
            assert!(p.concurrency >= 1, "{what}");
            for (i, stage) in p.stages.values().enumerate() {
                for need in &stage.needs {
                    let at = p.stages.get_index_of(need);
                    assert!(at.is_some_and(|j| j < i), "{what}: {need} not before {i}");
                }
                assert!(p.plugins.contains_key(&stage.plugin), "{what}");
            }
        }
        Err(problems) => {
            assert!(!problems.0.is_empty(), "{what}: no problem reported");
            for d in &problems.0 {
                assert!(
                    d.location.is_some(),
                    "{what}: a problem without a line and column: {d}\ninput:\n{}",
                    String::from_utf8_lossy(input)
                );
            }
            let mut seen = std::collections::HashSet::new();
            for d in &problems.0 {
                assert!(
                    seen.insert((d.location, &d.message)),
                    "{what}: reported twice: {d}"
                );
            }
        }
    }
    loaded
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn mutated_pipelines_never_panic_and_every_problem_has_a_place() {
    let (_dir, file) = sandbox();
    let seeds: Vec<String> = SEEDS.iter().map(|s| seed(s)).collect();
    for (i, s) in seeds.iter().enumerate() {
        if let Err(e) = check(&file, s.as_bytes(), &format!("seed {i}")) {
            panic!("seed {i} does not load:\n{e}");
        }
    }
    let cases = env_number("CAPSTAN_FUZZ_CASES", 3000);
    let start = env_number("CAPSTAN_FUZZ_SEED", 0x9e37_79b9);
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..cases {
        let mut m = Mutator {
            rng: fastrand::Rng::with_seed(start.wrapping_add(case)),
        };
        let mut input = seeds[m.rng.usize(..seeds.len())].clone().into_bytes();
        m.mutate(&mut input);
        let what = format!("CAPSTAN_FUZZ_SEED={} case {case}", start.wrapping_add(case));
        match check(&file, &input, &what) {
            Ok(_) => loaded += 1,
            Err(_) => refused += 1,
        }
    }
    // The mutants reach both ends: some still load, most are refused.
    if cases >= 1000 {
        assert!(
            loaded > cases / 50 && refused > cases / 2,
            "{loaded} loaded, {refused} refused"
        );
    }
}

/// The JSON Schema editors use (`capstan schema`) takes every mutant the
/// loader takes: an editor never flags what Capstan accepts. (What the
/// schema refuses, the loader refuses too: `super::schema::tests`.)
#[test]
fn every_mutant_that_loads_fits_the_schema() {
    let (_dir, file) = sandbox();
    let schema = super::schema::pipeline_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let seeds: Vec<String> = SEEDS.iter().map(|s| seed(s)).collect();
    let cases = env_number("CAPSTAN_FUZZ_CASES", 3000);
    let start = env_number("CAPSTAN_FUZZ_SEED", 0x9e37_79b9);
    let mut loaded = 0;
    for case in 0..cases {
        let mut m = Mutator {
            rng: fastrand::Rng::with_seed(start.wrapping_add(case)),
        };
        let mut input = seeds[m.rng.usize(..seeds.len())].clone().into_bytes();
        m.mutate(&mut input);
        let what = format!("CAPSTAN_FUZZ_SEED={} case {case}", start.wrapping_add(case));
        if check(&file, &input, &what).is_ok() {
            loaded += 1;
            assert_fits(&validator, &input, &what);
        }
    }
    assert!(cases < 1000 || loaded > cases / 50, "only {loaded} loaded");
}

/// `input`, a pipeline file, fits the schema of `validator`.
fn assert_fits(validator: &jsonschema::Validator, input: &[u8], what: &str) {
    let text = std::str::from_utf8(input).expect("a loaded file is UTF-8");
    let value: toml::Value = match toml::from_str(text) {
        Ok(value) => value,
        // TOML integers are i64; the loader reads a size up to u64::MAX,
        // which a TOML editor shows as a TOML error before any schema.
        Err(e) if e.message() == "u64 value was too large" => return,
        Err(e) => panic!("{what}: a loaded file is not TOML: {e}"),
    };
    let problems: Vec<String> = validator
        .iter_errors(&super::toml_json(&value))
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{what}: the loader takes it, the schema does not: {problems:#?}\ninput:\n{text}"
    );
}

#[test]
fn a_stage_that_needs_an_invalid_stage_is_reported_not_a_panic() {
    let (_dir, file) = sandbox();
    let base = "[pipeline]\nname = \"p\"\n[plugins.tool]\npath = \"plugin.wasm\"\n[plugins.bad]\npath = \"typo.wasm\"\n";
    for stages in [
        // The needed stage's plugin file is missing.
        "[stages.a]\nplugin = \"bad\"\n[stages.b]\nplugin = \"tool\"\nneeds = [\"a\"]\n",
        // The needed stage needs itself.
        "[stages.a]\nplugin = \"tool\"\nneeds = [\"a\"]\n[stages.b]\nplugin = \"tool\"\nneeds = [\"a\"]\n",
        // The needed stage uses an undeclared plugin, and is referenced.
        "[stages.a]\nplugin = \"nope\"\n[stages.b]\nplugin = \"tool\"\nneeds = [\"a\"]\nwith = { x = \"${stages.a.outputs.y}\" }\n",
        // A cycle through an invalid stage.
        "[stages.a]\nplugin = \"bad\"\nneeds = [\"b\"]\n[stages.b]\nplugin = \"tool\"\nneeds = [\"a\"]\n",
    ] {
        let text = format!("{base}{stages}");
        let problems = check(&file, text.as_bytes(), stages).unwrap_err();
        let messages: Vec<&str> = problems.0.iter().map(|d| d.message.as_str()).collect();
        assert!(
            messages.iter().all(|m| !m.contains("is not a stage")
                && !m.contains("there is no stage")
                && !m.contains("not upstream")),
            "{messages:?}"
        );
    }
    // Every problem of the last one is found in one pass.
    let text = format!(
        "{base}[stages.a]\nplugin = \"bad\"\nneeds = [\"b\"]\n[stages.b]\nplugin = \"tool\"\nneeds = [\"a\"]\n"
    );
    let problems = check(&file, text.as_bytes(), "cycle").unwrap_err();
    assert_eq!(problems.0.len(), 2, "{problems}");
    assert!(
        problems.0[1].message.starts_with("stages form a cycle"),
        "{problems}"
    );
}

#[test]
fn the_longest_chain_of_stages_loads_and_one_more_stage_is_refused() {
    let (_dir, file) = sandbox();
    let max = super::validator::MAX_STAGES;
    let mut text =
        String::from("[pipeline]\nname = \"p\"\n[plugins.tool]\npath = \"plugin.wasm\"\n");
    for i in 0..max {
        text.push_str(&format!("[stages.s{i}]\nplugin = \"tool\"\n"));
        if i > 0 {
            text.push_str(&format!("needs = [\"s{}\"]\n", i - 1));
        }
    }
    let pipeline = check(&file, text.as_bytes(), "chain").unwrap();
    assert_eq!(pipeline.stages.len(), max);
    assert_eq!(pipeline.stages[max - 1].upstream.len(), max - 1);
    text.push_str("[stages.one-more]\nplugin = \"tool\"\n");
    let problems = check(&file, text.as_bytes(), "too many").unwrap_err();
    assert_eq!(problems.0.len(), 1, "{problems}");
    assert!(
        problems.0[0].message.contains("more than 1000"),
        "{problems}"
    );
}

/// A file of one long line naming thousands of unknown stages: each problem
/// costs the same (no rescanning of the text, no hint past those shown), and
/// what is shown is bounded.
#[test]
fn a_file_of_countless_problems_is_reported_in_bounded_form() {
    let (_dir, file) = sandbox();
    let names: Vec<String> = (0..30_000).map(|i| format!("\"é{i}\"")).collect();
    let text = format!(
        "[pipeline]\nname = \"p\"\nenvironments = [{0}]\nprotected = [\"x\", {0}, \"y\"]\n[plugins.tool]\npath = \"plugin.wasm\"\n[stages.a]\nplugin = \"tool\"\nneeds = [{0}]\n",
        names.join(", ")
    );
    assert!(text.len() < super::read::MAX_PIPELINE_FILE as usize);
    let problems = check(&file, text.as_bytes(), "countless").unwrap_err();
    assert_eq!(problems.0.len(), super::diag::MAX_SHOWN + 1);
    let last = problems.0.last().unwrap();
    assert_eq!(
        last.message,
        "29902 more problems are not shown; this is the first of them"
    );
    // `protected` names "x" and "y"; both are found, with their columns.
    let line = text.lines().nth(3).unwrap();
    let y = line[..line.find("\"y\"").unwrap()].chars().count() + 1;
    assert_eq!(problems.0[1].location, Some((4, y)));
    for d in &problems.0 {
        assert!(d.source_line.as_ref().unwrap().chars().count() < 130, "{d}");
        assert!(d.to_string().len() < 2000, "{d}");
    }
}

/// Pipelines for [`prepared_pipelines_never_panic_and_every_problem_has_a_place`].
const PLUGIN_SEEDS: &[&str] = &[
    r#"[pipeline]
name = "p"
[plugins.hello]
path = "hello"
[stages.greet]
plugin = "hello"
with = { message = "hi ${run.id}" }
[[stages.greet.grants.exec]]
program = "echo"
args = ["*"]
[stages.answer]
plugin = "hello"
needs = ["greet"]
with = { message = "${stages.greet.outputs.message}" }
[[stages.answer.grants.exec]]
program = "echo"
args = ["*"]
[stages.answer.grants]
read = ["ro"]
env = ["HOME"]
"#,
    include_str!("../../../examples/hello/pipeline.toml"),
    concat!(
        include_str!("../../../examples/golden-image/pipeline.toml"),
        include_str!("../../../examples/custom-stage/pipeline-snippet.toml")
    ),
];

/// A seed with every plugin at the demo plugin: one compilation per test
/// run, and the other plugins' `with` tables are checked against its schema
/// (unknown keys, nested tables and arrays).
fn with_hello(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("path = ") {
                format!("path = \"{}\"", capstan_test_artifacts::HELLO)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The checks after loading (plugins, `with` against their schemas,
/// grants, programs) on mutants of pipelines of a real plugin: problems
/// located, never a panic. Fewer cases: each loads its plugins
/// (`CAPSTAN_FUZZ_PREPARE_CASES`, default 400).
#[test]
fn prepared_pipelines_never_panic_and_every_problem_has_a_place() {
    let (dir, file) = sandbox();
    std::fs::write(&file, "").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let protected = [crate::caps::fs::Protected::locate(&state, "the state dir").unwrap()];
    let cache = crate::runtime::cache::Cache::new(state.join("cache"));
    let runtime = crate::runtime::Runtime::new().unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Whether it is ready to run (warnings only), and its problems.
    let prepare = |pipeline: Pipeline, what: &str| {
        let prepared = catch_unwind(AssertUnwindSafe(|| {
            tokio.block_on(crate::run::prepare(pipeline, &runtime, &cache, &protected))
        }))
        .unwrap_or_else(|_| panic!("prepare panicked on {what}"));
        let (runnable, problems) = match prepared {
            Ok(p) => (true, p.warnings()),
            Err(e) => (false, e.0),
        };
        for d in &problems {
            assert!(
                d.location.is_some(),
                "{what}: a problem without a place: {d}"
            );
        }
        (runnable, problems)
    };
    // A pipeline ready to run fits its schema with every `with` checked
    // against the plugin's (every plugin is the demo plugin here).
    let hello = tokio
        .block_on(crate::runtime::plugin::LoadedPlugin::load(
            &runtime,
            &cache,
            Path::new(capstan_test_artifacts::HELLO),
            None,
        ))
        .unwrap()
        .info
        .config_schema
        .expect("the demo plugin publishes a schema");
    let fits_its_schema = |pipeline: &Pipeline, input: &[u8], what: &str| {
        let stages: Vec<(String, String)> = pipeline
            .stages
            .values()
            .map(|s| (s.name.clone(), s.plugin.clone()))
            .collect();
        let plugins = pipeline
            .plugins
            .keys()
            .map(|name| (name.clone(), hello.clone()))
            .collect();
        let schema = super::schema::pipeline_schema_with(&stages, &plugins).unwrap();
        assert_fits(&jsonschema::validator_for(&schema).unwrap(), input, what);
    };
    let seeds: Vec<String> = PLUGIN_SEEDS.iter().map(|s| with_hello(s)).collect();
    // The first seed is valid as it is.
    let first = check(&file, seeds[0].as_bytes(), "plugin seed 0").unwrap();
    fits_its_schema(&first, seeds[0].as_bytes(), "plugin seed 0");
    let (runnable, warnings) = prepare(first, "plugin seed 0");
    assert!(runnable);
    assert!(
        warnings
            .iter()
            .all(|w| w.severity == super::Severity::Warning)
    );
    let cases = env_number("CAPSTAN_FUZZ_PREPARE_CASES", 400);
    let start = env_number("CAPSTAN_FUZZ_SEED", 0x9e37_79b9);
    let (mut prepared, mut runnable) = (0, 0);
    for case in 0..cases {
        let mut m = Mutator {
            rng: fastrand::Rng::with_seed(start.wrapping_add(case)),
        };
        let mut input = seeds[m.rng.usize(..seeds.len())].clone().into_bytes();
        m.mutate(&mut input);
        let what = format!(
            "CAPSTAN_FUZZ_SEED={} plugin case {case}",
            start.wrapping_add(case)
        );
        if let Ok(pipeline) = check(&file, &input, &what) {
            let copy = pipeline.clone();
            if prepare(pipeline, &what).0 {
                fits_its_schema(&copy, &input, &what);
                runnable += 1;
            }
            prepared += 1;
        }
    }
    assert!(
        cases < 100 || prepared > cases / 10,
        "only {prepared} of {cases} loaded"
    );
    assert!(
        cases < 100 || runnable > cases / 50,
        "only {runnable} of {cases} were ready to run"
    );
}
