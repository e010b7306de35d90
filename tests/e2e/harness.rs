//! A sandbox directory per test, pipeline files with plugin paths filled in,
//! and helpers to run `capstan` and read what a run recorded.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Placeholders in test pipelines, replaced by built plugin paths.
const PLUGINS: &[(&str, &str)] = &[
    ("{hello}", capstan_test_artifacts::HELLO),
    ("{adversary}", capstan_test_artifacts::ADVERSARY),
    ("{old_contract}", capstan_test_artifacts::OLD_CONTRACT),
];

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

/// What one `capstan` invocation did.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(o: Output) -> Ran {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let sb = Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        std::fs::create_dir(sb.path().join("ro")).unwrap();
        std::fs::create_dir(sb.path().join("rw")).unwrap();
        sb
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().canonicalize().expect("sandbox path")
    }

    /// Write a file (parents created) and return its path.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Write `pipeline.toml` with `{hello}`, `{adversary}`, `{old_contract}`
    /// and `{sandbox}` replaced.
    pub fn pipeline(&self, toml: &str) -> PathBuf {
        self.write("pipeline.toml", &self.fill(toml))
    }

    pub fn fill(&self, text: &str) -> String {
        let mut text = text.replace("{sandbox}", &self.path().to_string_lossy());
        for (placeholder, path) in PLUGINS {
            text = text.replace(placeholder, path);
        }
        text
    }

    /// Run `capstan` in the sandbox, with a known environment: a granted
    /// variable and a secret-looking one that no stage is granted.
    pub fn capstan(&self, args: &[&str]) -> Ran {
        self.command(args).output().expect("run capstan").into()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.tool(env!("CARGO_BIN_EXE_capstan"));
        cmd.args(args);
        cmd
    }

    /// `program` in the sandbox, with the environment `capstan` gets.
    pub fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.path())
            .env("CAPSTAN_STATE_DIR", self.path().join(".capstan"))
            .env("GRANTED_VAR", "granted-value")
            .env("SECRET_TOKEN", "hunter2-must-not-leak")
            .env_remove("RUST_LOG");
        cmd
    }

    /// `capstan <args>` that must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let ran = self.capstan(args);
        assert_eq!(ran.code, 0, "capstan {args:?}: {ran:?}");
        serde_json::from_str(&ran.stdout)
            .unwrap_or_else(|e| panic!("capstan {args:?}: {e}: {ran:?}"))
    }

    /// `capstan show <run> --json`: the run, its stages (latest attempts),
    /// every attempt, approvals, the pending request.
    pub fn show(&self, run: &str) -> Value {
        self.json(&["show", run, "--json"])
    }

    /// The newest run's id, from the run store.
    pub fn newest_run_id(&self) -> String {
        self.json(&["runs", "--json", "--limit", "1"])[0]["id"]
            .as_str()
            .expect("a run")
            .to_string()
    }

    /// The only (or newest) run recorded in the sandbox.
    pub fn last_run(&self) -> Run {
        let runs = self.path().join(".capstan/runs");
        let mut ids: Vec<_> = std::fs::read_dir(&runs)
            .expect("runs dir")
            .map(|e| e.unwrap().path())
            .collect();
        ids.sort();
        Run::read(ids.last().expect("a run"))
    }
}

/// A finished run's directory.
pub struct Run {
    pub dir: PathBuf,
    pub record: Value,
    pub audit: Vec<Value>,
}

impl Run {
    pub fn read(dir: &Path) -> Run {
        let record =
            serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).expect("run.json"))
                .expect("run.json is JSON");
        let audit = std::fs::read_to_string(dir.join("audit.jsonl"))
            .expect("audit.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect();
        Run {
            dir: dir.to_path_buf(),
            record,
            audit,
        }
    }

    pub fn stage(&self, name: &str) -> &Value {
        self.record["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no stage {name} in {:#}", self.record))
    }

    pub fn status(&self, name: &str) -> String {
        self.stage(name)["status"].as_str().unwrap().to_string()
    }

    pub fn reason(&self, name: &str) -> String {
        self.stage(name)["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn output(&self, stage: &str, key: &str) -> Value {
        self.stage(stage)["outputs"][key].clone()
    }

    pub fn log(&self, stage: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{stage}.log")))
            .unwrap_or_default()
    }

    /// Audit events of one stage.
    pub fn audit_of(&self, stage: &str) -> Vec<&Value> {
        self.audit.iter().filter(|e| e["stage"] == stage).collect()
    }

    /// Audit denials of one stage.
    pub fn denials(&self, stage: &str) -> Vec<&Value> {
        self.audit_of(stage)
            .into_iter()
            .filter(|e| e["allowed"] == false)
            .collect()
    }
}

/// The adversary's requests, all granted (a request without a grant stops
/// the pipeline); attacks then try to go beyond them. Grants `ro/` and `rw/`
/// of the sandbox, which [`Sandbox::new`] creates.
const ADVERSARY_GRANTS: &str = r#"
[[stages.NAME.grants.exec]]
program = "echo"
args = ["hello|world"]
[[stages.NAME.grants.exec]]
program = "sleep"
args = ["*"]
[[stages.NAME.grants.exec]]
program = "yes"
[[stages.NAME.grants.exec]]
program = "true"
[stages.NAME.grants]
read = ["ro"]
write = ["rw"]
env = ["GRANTED_VAR"]
connect = ["127.0.0.1:*"]
"#;

/// A stage of the adversary plugin with `with` and extra stage keys.
pub fn adversary_stage(name: &str, with: &str, extra: &str) -> String {
    format!(
        "[stages.{name}]\nplugin = \"adversary\"\nwith = {with}\n{extra}\n{}",
        ADVERSARY_GRANTS.replace("NAME", name)
    )
}
