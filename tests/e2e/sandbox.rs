//! The sandbox of the programs stages start (issue 10), attacked from inside
//! by a child that runs arbitrary code, as on a runner holding production
//! keys: a granted `sh`, a Terraform config and an Ansible callback written
//! into the work dir. Each attempt must fail, leave nothing behind and leak
//! nothing into any log or record; beside each, a control shows the same
//! means work where the grants allow (a test cannot pass because
//! everything fails).
//!
//! Canary contents are random-looking tokens that appear in no script:
//! finding one anywhere under `.capstan/` or in capstan's output is an
//! escape.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Guarded, Ran, Run, Sandbox, adversary_stage};

/// A secret outside every grant: its path (given to the attacker) and its
/// content (which must never show up anywhere).
struct Canary {
    path: PathBuf,
    content: String,
}

impl Canary {
    fn new(dir: &Path, name: &str, label: &str) -> Canary {
        let path = dir.join(name);
        let content = format!("pr0d-k3y-{label}-{}-9f1c", std::process::id());
        std::fs::write(&path, &content).unwrap();
        Canary { path, content }
    }

    fn path(&self) -> String {
        self.path.display().to_string()
    }
}

/// One step of a command stage.
struct Step {
    name: &'static str,
    run: Vec<String>,
    /// An attack: it must fail, with `continue_on_error` so that the
    /// next step still runs. Other steps end the stage when they fail.
    attack: bool,
}

/// `sh -c <script>`.
fn sh(script: impl Into<String>) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn attack(name: &'static str, run: Vec<String>) -> Step {
    Step {
        name,
        run,
        attack: true,
    }
}

fn step(name: &'static str, run: Vec<String>) -> Step {
    Step {
        name,
        run,
        attack: false,
    }
}

/// A command stage running `steps`, with `read = ["ro"]` and the exec
/// grants `grants` (`[[stages.<stage>.grants.exec]]` bodies).
fn command_stage(stage: &str, steps: &[Step], grants: &[&str]) -> String {
    let mut toml = format!("[stages.{stage}]\nplugin = \"command\"\n");
    for step in steps {
        // A JSON array of strings is a TOML array of basic strings.
        let run = serde_json::to_string(&step.run).unwrap();
        toml.push_str(&format!(
            "[[stages.{stage}.with.steps]]\nname = \"{}\"\ncontinue_on_error = {}\nrun = {run}\n",
            step.name, step.attack
        ));
    }
    for grant in grants {
        toml.push_str(&format!("[[stages.{stage}.grants.exec]]\n{grant}\n"));
    }
    toml.push_str(&format!("[stages.{stage}.grants]\nread = [\"ro\"]\n"));
    toml
}

/// `stage_toml` (from [`command_stage`]) with more keys of the stage.
fn with_keys(stage_toml: String, stage: &str, keys: &str) -> String {
    let head = format!("[stages.{stage}]\nplugin = \"command\"\n");
    assert!(stage_toml.starts_with(&head), "{stage_toml}");
    stage_toml.replacen(&head, &format!("{head}{keys}\n"), 1)
}

/// An exec grant of `sh -c <anything>`, with `more` fields.
fn sh_grant(more: &str) -> String {
    format!("program = \"sh\"\nargs = [\"-c\", \"*\"]\nenv = [\"CAPSTAN_OUTPUT\"]\n{more}")
}

/// `[pipeline]` (environment `dev`), `[defaults]` and the command plugin.
fn pipeline_head(name: &str) -> String {
    format!(
        "[pipeline]\nname = \"{name}\"\nenvironments = [\"dev\"]\nconcurrency = 4\n\
         [defaults]\ntimeout = \"120s\"\n[plugins.command]\npath = \"{{command}}\"\n"
    )
}

/// What one step did: its status in the stage report and its part of the
/// stage log.
struct StepResult {
    status: String,
    log: String,
}

/// The steps of a command stage, by name.
fn step_results(run: &Run, stage: &str) -> Vec<(String, StepResult)> {
    let log = run.log(stage);
    let report = run.stage(stage)["report"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let total = report.len();
    report
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let name = step["name"].as_str().unwrap().to_string();
            let start = format!("step {}/{total}: {name}\n", i + 1);
            let next = format!("step {}/{total}: ", i + 2);
            let section = log
                .split_once(&start)
                .map(|(_, rest)| rest.split(&next).next().unwrap_or(rest).to_string())
                .unwrap_or_default();
            (
                name,
                StepResult {
                    status: step["status"].as_str().unwrap().to_string(),
                    log: section,
                },
            )
        })
        .collect()
}

/// Escapes found, reported all at once (one attack that gets through must
/// not hide another).
#[derive(Default)]
struct Escapes(Vec<String>);

impl Escapes {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "{} escape(s):\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

/// Every attack step of `stage` failed with one of `denied` in its log and
/// did not print `ESCAPED`; every other step (the controls) succeeded.
fn check_steps(escapes: &mut Escapes, run: &Run, stage: &str, steps: &[Step], denied: &[&str]) {
    let results = step_results(run, stage);
    assert_eq!(
        results.len(),
        steps.len(),
        "{stage}: not every step ran: {:#}\n{}",
        run.stage(stage),
        run.log(stage)
    );
    for (step, (name, result)) in steps.iter().zip(&results) {
        assert_eq!(step.name, name);
        if step.attack {
            escapes.check(
                result.status != "exit code 0"
                    && !result.log.contains("ESCAPED")
                    && denied.iter().any(|d| result.log.contains(d)),
                || {
                    format!(
                        "{stage}: attack `{name}` was not denied ({}; expected one of {denied:?} in its log):\n{}",
                        result.status, result.log
                    )
                },
            );
        } else {
            assert_eq!(
                result.status, "exit code 0",
                "{stage}: control `{name}` must work inside the sandbox:\n{}",
                result.log
            );
        }
    }
}

/// Every file under `dir`, its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&path)),
            Ok(t) if t.is_file() => {
                if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
            _ => {}
        }
    }
    out
}

/// No canary content is in capstan's output or in `files` (read from
/// `.capstan/`: run records, logs, audit, outputs, store, work dirs).
fn check_nothing_leaked(
    escapes: &mut Escapes,
    files: &[(PathBuf, Vec<u8>)],
    ran: &Ran,
    canaries: &[&Canary],
) {
    for canary in canaries {
        let needle = canary.content.as_bytes();
        escapes.check(
            !ran.stdout.contains(&canary.content) && !ran.stderr.contains(&canary.content),
            || {
                format!(
                    "the content of {} reached capstan's output",
                    canary.path.display()
                )
            },
        );
        for (path, bytes) in files {
            escapes.check(!bytes.windows(needle.len()).any(|w| w == needle), || {
                format!(
                    "the content of {} reached {}",
                    canary.path.display(),
                    path.display()
                )
            });
        }
    }
}

/// A file in the home directory of the user running the test (the
/// runner's `$HOME`, e.g. `/root`), when there is one outside the sandbox:
/// (directory, a regular file in it).
fn home() -> Option<(PathBuf, Option<PathBuf>)> {
    let home = PathBuf::from(std::env::var_os("HOME")?)
        .canonicalize()
        .ok()?;
    if home == Path::new("/") || std::env::temp_dir().starts_with(&home) {
        return None;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&home)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| std::fs::File::open(p).is_ok())
        .collect();
    files.sort();
    Some((home, files.into_iter().next()))
}

/// Words a refusal by the sandbox prints.
const DENIED: &[&str] = &[
    "Permission denied",
    "Operation not permitted",
    "Invalid cross-device link",
    // What the mount namespace hides (every top-level directory but the
    // system's, covered by an empty read-only tmpfs, with only the stage's
    // own directories mounted back).
    "No such file or directory",
    "Directory nonexistent",
    "Read-only file system",
];

/// How long any one `capstan` here may run before the guard kills it.
const GUARD: Duration = Duration::from_secs(300);

/// The granted shell's attempts on files, Capstan's state, the host
/// process and the system, one step each, after a step of controls.
fn shell_steps(
    sb: &Path,
    outside: &Canary,
    beside: &Canary,
    other_run: &Path,
    host_shm: &Path,
) -> Vec<Step> {
    let (o, b) = (outside.path(), beside.path());
    let outside_dir = outside.path.parent().unwrap().display().to_string();
    let beside_name = beside.path.file_name().unwrap().to_string_lossy();
    let shm = host_shm.display();
    let sb = sb.display();
    let mut steps = vec![
        // The same means, where the grants allow.
        step(
            "controls",
            sh(format!(
                r#"set -e
echo "granted=$(cat {sb}/ro/granted.txt)" >> "$CAPSTAN_OUTPUT"
echo work-ok > made && echo "work=$(cat made)" >> "$CAPSTAN_OUTPUT"
echo tmp-ok > "$TMPDIR/t" && echo "tmp=$(cat "$TMPDIR/t")" >> "$CAPSTAN_OUTPUT"
echo shm-ok > /dev/shm/t && echo "shm=$(cat /dev/shm/t)" >> "$CAPSTAN_OUTPUT"
ln -s {sb}/ro/granted.txt granted-link && echo "symlink=$(cat granted-link)" >> "$CAPSTAN_OUTPUT"
ln made made-hard && echo "hardlink=$(cat made-hard)" >> "$CAPSTAN_OUTPUT"
sleep 30 & kill -0 $! && kill $! && echo "signal=own child" >> "$CAPSTAN_OUTPUT"
grep -q CAPSTAN_OUTPUT /proc/self/environ && echo "proc=own environ" >> "$CAPSTAN_OUTPUT"
echo "host=$(cat /proc/$PPID/comm)" >> "$CAPSTAN_OUTPUT"
echo "python=$(/usr/bin/python3 -c 'print(6*7)')" >> "$CAPSTAN_OUTPUT"
"#
            )),
        ),
        // Reading outside the grants.
        attack(
            "read a file outside the pipeline dir",
            sh(format!("cat {o} 2>&1")),
        ),
        attack(
            "read a file beside the pipeline",
            sh(format!("cat {b} 2>&1")),
        ),
        // What can be listed are the mount points of the stage's own
        // directories: the attack succeeds only if a name outside them shows.
        attack(
            "list the pipeline dir",
            sh(format!(
                "ls -A {sb} 2>&1 | grep -F '{beside_name}' || ls -A {sb}/{beside_name} 2>&1"
            )),
        ),
        attack(
            "list the other stages' TMPDIRs",
            sh(
                r#"ls -A "$TMPDIR/.." 2>/dev/null | grep -vxF "$(basename "$TMPDIR")" | grep . || ls "$TMPDIR/../terraform-" 2>&1"#,
            ),
        ),
        attack(
            "read the host's /dev/shm",
            sh(format!("cat {shm} 2>&1 || cat /proc/$PPID/root{shm} 2>&1")),
        ),
        // Writing outside the work dir.
        attack(
            "write outside the pipeline dir",
            sh(format!("echo pwned > {outside_dir}/planted 2>&1")),
        ),
        attack(
            "write beside the pipeline",
            sh(format!("echo pwned > {sb}/planted 2>&1")),
        ),
        attack(
            "write into a read grant",
            sh(format!("echo pwned > {sb}/ro/planted 2>&1")),
        ),
        attack(
            "create a directory outside",
            sh(format!("mkdir {sb}/planted-dir 2>&1")),
        ),
        attack(
            "write through ..",
            sh("echo pwned > ../planted-dotdot 2>&1"),
        ),
        attack(
            "write through ../../../..",
            sh("echo pwned > ../../../../planted-deep 2>&1"),
        ),
        attack(
            "write through /proc/self/cwd/..",
            sh("echo pwned > /proc/self/cwd/../planted-proc 2>&1"),
        ),
        // Capstan's own state.
        attack(
            "read the run store",
            sh(format!("head -c 64 {sb}/.capstan/capstan.db 2>&1")),
        ),
        attack(
            "list the state dir",
            sh(format!("ls -A {sb}/.capstan 2>&1")),
        ),
        attack(
            "read this run's audit log",
            sh("cat ../../audit.jsonl 2>&1"),
        ),
        attack("list this run's logs", sh("ls ../../logs 2>&1")),
        attack(
            "forge a line in this run's audit log",
            sh(r#"echo '{"forged":"by the child"}' >> ../../audit.jsonl 2>&1"#),
        ),
        attack(
            "read another run's record",
            sh(format!("cat {}/run.json 2>&1", other_run.display())),
        ),
        attack(
            "read the cache key",
            sh(format!("od -c {sb}/xdg-state/capstan/cache-key 2>&1")),
        ),
        attack(
            "list the compiled plugins",
            sh(format!("ls {sb}/xdg-cache/capstan/components 2>&1")),
        ),
        // The host process and the system.
        attack(
            "read the host's environment",
            sh("cat /proc/$PPID/environ 2>&1"),
        ),
        attack("read init's environment", sh("cat /proc/1/environ 2>&1")),
        // (Their numbers can be listed: the directory is the host user's.)
        attack(
            "see where the host's descriptors point",
            sh("ls -l /proc/$PPID/fd/ 2>&1"),
        ),
        attack(
            "read beside the pipeline through the host's cwd",
            sh(format!("cat /proc/$PPID/cwd/{beside_name} 2>&1")),
        ),
        attack(
            "signal the host and its ancestors",
            // Fails unless some `kill -0` gets through, and says which.
            sh(r#"p=$PPID; refused=0; sent=0
while [ "$p" -gt 1 ]; do
  if kill -0 "$p" 2>&1; then echo "ESC""APED: signalled $p ($(cat /proc/$p/comm))"; sent=1; else refused=$((refused+1)); fi
  read -r stat < /proc/$p/stat; rest=$${stat##*) }; set -- $rest; p=$2
done
echo "refused by $refused ancestors"
[ "$sent" = 1 ]"#),
        ),
        // Links and mounts.
        attack(
            "read through a symlink planted in the work dir",
            sh(format!("ln -s {o} planted-link && cat planted-link 2>&1")),
        ),
        attack(
            "hard-link the canary into the work dir",
            sh(format!("ln {b} planted-hard 2>&1 && cat planted-hard 2>&1")),
        ),
        attack(
            "bind-mount the outside dir in a user namespace",
            sh(format!(
                "mkdir -p mnt && unshare --user --mount sh -c 'mount --bind {outside_dir} mnt && cat mnt/canary.txt' 2>&1"
            )),
        ),
        attack(
            "join the host's cgroup",
            sh("echo $$ > /sys/fs/cgroup/cgroup.procs 2>&1"),
        ),
        // Last: it would take the canary away from the attacks above.
        attack(
            "move the canary into the work dir",
            sh(format!("mv {b} moved 2>&1")),
        ),
    ];
    if let Some((home, file)) = home() {
        let mut at = 5;
        steps.insert(
            at,
            attack(
                "list the runner's home",
                sh(format!("ls -A {} 2>&1", home.display())),
            ),
        );
        if let Some(file) = file {
            at += 1;
            steps.insert(
                at,
                attack(
                    "read a file in the runner's home",
                    sh(format!("head -c 64 {} 2>&1", file.display())),
                ),
            );
        }
    }
    steps
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Terraform's `file()` in a config the attacker wrote into the work dir;
/// a control config reads a granted file the same way.
fn terraform_steps(sb: &Path, outside: &Canary, beside: &Canary) -> Vec<Step> {
    let granted = sb.join("ro/granted.txt").display().to_string();
    let output =
        |name: &str, path: &str| format!("output \"{name}\" {{\n  value = file(\"{path}\")\n}}\n");
    let plan = |dir: &str| {
        argv(&[
            "terraform",
            &format!("-chdir={dir}"),
            "plan",
            "-input=false",
            "-no-color",
        ])
    };
    vec![
        step(
            "write the configs",
            sh(format!(
                "mkdir tf-ok tf-leak\ncat > tf-ok/main.tf <<'END'\n{}END\ncat > tf-leak/main.tf <<'END'\n{}{}END\n",
                output("granted", &granted),
                output("outside", &outside.path()),
                output("beside", &beside.path()),
            )),
        ),
        step("plan reading a granted file", plan("tf-ok")),
        attack("plan reading the canaries", plan("tf-leak")),
    ]
}

/// An `ansible.cfg` and a callback plugin in the work dir (Ansible's cwd):
/// the callback reads a granted file (its output proves it was loaded),
/// then the canary; the ad-hoc `shell` module then `cat`s the canary.
fn ansible_steps(sb: &Path, outside: &Canary) -> Vec<Step> {
    let granted = sb.join("ro/granted.txt").display().to_string();
    let o = outside.path();
    let adhoc = |file: &str| {
        argv(&[
            "ansible",
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            "ansible_python_interpreter=/usr/bin/python3",
            "-m",
            "shell",
            "-a",
            &format!("cat {file}"),
        ])
    };
    vec![
        step(
            "write ansible.cfg and a callback",
            sh(format!(
                r#"set -e
mkdir -p callback_plugins .ansible/tmp
cat > ansible.cfg <<END
[defaults]
callback_plugins = $PWD/callback_plugins
callbacks_enabled = leak
bin_ansible_callbacks = True
local_tmp = $PWD/.ansible/tmp
remote_tmp = $PWD/.ansible/tmp
END
cat > callback_plugins/leak.py <<'END'
from ansible.plugins.callback import CallbackBase
print("CALLBACK-LOADED granted=" + open("{granted}").read().strip(), flush=True)
try:
    print("ESC" + "APED by the callback: " + open("{o}").read(), flush=True)
except Exception as e:
    print("CALLBACK-DENIED %r" % e, flush=True)

class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "leak"
    CALLBACK_NEEDS_ENABLED = True
END
"#
            )),
        ),
        step("cat a granted file", adhoc(&granted)),
        attack("cat the canary, with the callback loaded", adhoc(&o)),
    ]
}

/// An exec grant of `program` with any arguments and no network.
fn tool_grant(program: &str) -> String {
    format!(
        "program = \"{program}\"\nargs = [\"**\"]\nenv = [\"CAPSTAN_OUTPUT\"]\nnetwork = \"none\""
    )
}

/// The adversary runs `ln -s granted.txt <link>`: a child creating a file.
fn ln_stage(name: &str, link: &str) -> String {
    adversary_stage(
        name,
        &format!(
            r#"{{ action = "exec", program = "ln", args = ["-s", "granted.txt", "{link}"] }}"#
        ),
        "",
    )
}

/// The `start` event of `stage` in the audit log.
fn start_event<'a>(run: &'a Run, stage: &str) -> &'a Value {
    run.audit_of(stage)
        .into_iter()
        .find(|e| e["capability"] == "stage" && e["detail"]["event"] == "start")
        .unwrap_or_else(|| panic!("{stage}: no start event in audit.jsonl"))
}

/// The allowed `exec` events of `stage`.
fn exec_events<'a>(run: &'a Run, stage: &str) -> Vec<&'a Value> {
    run.audit_of(stage)
        .into_iter()
        .filter(|e| e["capability"] == "exec" && e["allowed"] == true)
        .collect()
}

/// A granted shell, a Terraform config and an Ansible callback try every
/// way out of their grants, in one run:
/// - `shell`: files outside the grants, writes outside the work dir,
///   Capstan's state (store, this and another run, cache and its key), the
///   host process (environment, descriptors, signals), links and mounts;
/// - `child_writes*`: a child (the adversary's `ln -s`) writes its write
///   grant, and is refused outside it and in `.capstan/`;
/// - `terraform`: `file()` of the canaries in a plan;
/// - `ansible`: a callback in the work dir's `ansible.cfg`, an ad-hoc `cat`.
///
/// The audit log records the sandbox every stage and child ran with.
#[test]
fn a_child_running_arbitrary_code_stays_inside_its_grants() {
    let sb = Sandbox::new();
    let root = sb.path();
    sb.write("ro/granted.txt", "granted-content-ok\n");
    let outside_dir = tempfile::tempdir().unwrap();
    let outside = Canary::new(
        &outside_dir.path().canonicalize().unwrap(),
        "canary.txt",
        "outside",
    );
    let beside = Canary::new(&root, "beside.txt", "beside");
    // Another run's record, as a finished run leaves it.
    let other_run = root.join(".capstan/runs/20200101-000000-0000");
    std::fs::create_dir_all(other_run.join("logs")).unwrap();
    let other = Canary::new(&other_run, "run.json", "other-run");
    std::fs::write(
        &other.path,
        format!(
            r#"{{"started":"2020-01-01T00:00:00Z","secret":"{}"}}"#,
            other.content
        ),
    )
    .unwrap();
    // A file in the host's /dev/shm (children see a private one); removed
    // when the test ends.
    let shm_file = tempfile::Builder::new()
        .prefix("capstan-test-canary-")
        .tempfile_in("/dev/shm")
        .unwrap();
    let shm = Canary::new(
        shm_file.path().parent().unwrap(),
        &shm_file.path().file_name().unwrap().to_string_lossy(),
        "shm",
    );

    let shell = shell_steps(&root, &outside, &beside, &other_run, &shm.path);
    let terraform = terraform_steps(&root, &outside, &beside);
    let ansible = ansible_steps(&root, &outside);
    let mut toml = pipeline_head("attacks");
    toml.push_str("[plugins.adversary]\npath = \"{adversary}\"\n");
    toml.push_str(&command_stage("shell", &shell, &[&sh_grant("")]));
    toml.push_str(&command_stage(
        "terraform",
        &terraform,
        &[&sh_grant(""), &tool_grant("terraform")],
    ));
    toml.push_str(&command_stage(
        "ansible",
        &ansible,
        &[&sh_grant(""), &tool_grant("ansible")],
    ));
    toml.push_str(&ln_stage("child_writes", "{sandbox}/rw/made-by-child"));
    toml.push_str(&ln_stage("child_writes_outside", "{sandbox}/made-by-child"));
    toml.push_str(&ln_stage(
        "child_writes_state",
        "{sandbox}/.capstan/made-by-child",
    ));
    let pipeline = sb.pipeline(&toml);
    let (ran, took) = sb.capstan_within(&["run", pipeline.to_str().unwrap(), "-q"], GUARD);
    eprintln!("the attacks ran in {took:?}");
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    let mut escapes = Escapes::default();

    // The controls: the sandbox lets through what the grants allow.
    for (key, want) in [
        ("granted", "granted-content-ok"),
        ("work", "work-ok"),
        ("tmp", "tmp-ok"),
        ("shm", "shm-ok"),
        ("symlink", "granted-content-ok"),
        ("hardlink", "work-ok"),
        ("signal", "own child"),
        ("proc", "own environ"),
        ("host", "capstan"),
        ("python", "42"),
    ] {
        assert_eq!(
            run.output("shell", key),
            want,
            "control `{key}`: {:#}\n{}",
            run.stage("shell"),
            run.log("shell")
        );
    }
    // Each attack aims at something that is there.
    for target in [
        root.join(".capstan/capstan.db"),
        root.join("xdg-state/capstan/cache-key"),
        root.join("xdg-cache/capstan/components"),
        run.dir.join("audit.jsonl"),
        run.dir.join("logs"),
    ] {
        assert!(target.exists(), "{} is there to attack", target.display());
    }
    check_steps(&mut escapes, &run, "shell", &shell, DENIED);

    // Nothing written outside the work dir, nothing taken.
    let work = run.dir.join("stages/shell");
    for planted in [
        outside.path.with_file_name("planted"),
        root.join("planted"),
        root.join("ro/planted"),
        root.join("planted-dir"),
        root.join("planted-deep"),
        run.dir.join("stages/planted-dotdot"),
        run.dir.join("stages/planted-proc"),
        root.join("made-by-child"),
        root.join(".capstan/made-by-child"),
        work.join("planted-hard"),
        work.join("moved"),
        work.join("mnt/canary.txt"),
    ] {
        escapes.check(planted.symlink_metadata().is_err(), || {
            format!("a child created {}", planted.display())
        });
    }
    escapes.check(
        std::fs::read_to_string(&beside.path).ok() == Some(beside.content.clone()),
        || format!("a child moved or changed {}", beside.path.display()),
    );
    escapes.check(run.audit.iter().all(|e| e["forged"].is_null()), || {
        "a child wrote a line into the run's audit.jsonl".into()
    });

    // A child writes its write grant, and nowhere else.
    assert_eq!(
        run.output("child_writes", "exit_code"),
        0,
        "control: a child may write its write grant: {:#}",
        run.stage("child_writes")
    );
    assert!(root.join("rw/made-by-child").symlink_metadata().is_ok());
    for stage in ["child_writes_outside", "child_writes_state"] {
        let stderr = run.output(stage, "stderr");
        escapes.check(
            run.output(stage, "exit_code") != 0
                && stderr
                    .as_str()
                    .is_some_and(|s| DENIED.iter().any(|d| s.contains(d))),
            || format!("{stage}: `ln -s` was not refused: {:#}", run.stage(stage)),
        );
    }

    // Terraform: `file()` reads the granted file, not the canaries.
    let tf = step_results(&run, "terraform");
    assert!(
        tf.len() == 3 && tf[1].1.log.contains("granted-content-ok"),
        "control: terraform's file() reads a granted file:\n{}",
        run.log("terraform")
    );
    check_steps(
        &mut escapes,
        &run,
        "terraform",
        &terraform,
        &[
            "permission denied",
            "no such file or directory",
            "no file exists",
        ],
    );

    // Ansible: the callback was loaded, and read the granted file only.
    let an = step_results(&run, "ansible");
    assert!(
        an.len() == 3
            && an[1]
                .1
                .log
                .contains("CALLBACK-LOADED granted=granted-content-ok")
            && an[1].1.log.contains("CHANGED"),
        "control: ansible loads the work dir's callback and cats a granted file:\n{}",
        run.log("ansible")
    );
    escapes.check(an[2].1.log.contains("CALLBACK-DENIED"), || {
        format!("ansible's callback read the canary:\n{}", an[2].1.log)
    });
    check_steps(
        &mut escapes,
        &run,
        "ansible",
        &ansible,
        &["Permission denied", "No such file or directory"],
    );

    // The audit log: each stage's file rules, and each child's sandbox.
    let canaries = [&outside, &beside, &other, &shm];
    for (stage, network) in [
        ("shell", "host"),
        ("terraform", "none"),
        ("ansible", "none"),
        ("child_writes", "host"),
    ] {
        let start = start_event(&run, stage);
        let rules = &start["detail"]["sandbox"];
        let paths = |key: &str| -> Vec<PathBuf> {
            rules[key]
                .as_array()
                .unwrap_or_else(|| panic!("{stage}: no sandbox.{key} in {start:#}"))
                .iter()
                .map(|p| PathBuf::from(p.as_str().unwrap()))
                .collect()
        };
        let (read, write) = (paths("read"), paths("write"));
        assert!(
            rules["enforced"]
                .as_str()
                .is_some_and(|e| e.starts_with("landlock ABI")),
            "{stage}: {rules:#}"
        );
        assert!(read.contains(&root.join("ro")), "{stage}: {rules:#}");
        assert!(
            write.contains(&run.dir.join("stages").join(stage)),
            "{stage}: {rules:#}"
        );
        if stage == "child_writes" {
            assert!(write.contains(&root.join("rw")), "{stage}: {rules:#}");
        }
        for rule in read.iter().chain(&write) {
            for canary in canaries {
                escapes.check(!canary.path.starts_with(rule), || {
                    format!(
                        "{stage}: the rule on {} covers {}",
                        rule.display(),
                        canary.path.display()
                    )
                });
            }
            escapes.check(!root.join(".capstan/capstan.db").starts_with(rule), || {
                format!(
                    "{stage}: the rule on {} covers the run store",
                    rule.display()
                )
            });
        }
        let execs = exec_events(&run, stage);
        assert!(!execs.is_empty(), "{stage}: no exec event");
        for exec in execs {
            let sandbox = &exec["detail"]["sandbox"];
            let program = exec["detail"]["program"].as_str().unwrap();
            assert_eq!(sandbox["files"], rules["enforced"], "{stage}: {exec:#}");
            let want = if program == "sh" { "host" } else { network };
            assert_eq!(sandbox["network"], want, "{stage} {program}: {exec:#}");
            for limit in ["open_files", "processes", "cpu", "address_space"] {
                assert!(
                    !sandbox["limits"][limit].is_null(),
                    "{stage} {program}: no limit `{limit}`: {exec:#}"
                );
            }
        }
    }

    // No canary's content anywhere: logs, audit, run.json, outputs, store.
    let files: Vec<(PathBuf, Vec<u8>)> = files_under(&root.join(".capstan"))
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&other_run))
        .collect();
    check_nothing_leaked(&mut escapes, &files, &ran, &canaries);
    escapes.assert_none();
}

/// A listener the test runs on the host, recording the tag each client
/// sends; stopped (its thread joined) by [`Listener::stop`] or on drop.
struct Listener {
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Serve `accept` (non-blocking: `WouldBlock` when nobody waits).
    fn serve<S: Read + 'static>(
        mut accept: impl FnMut() -> std::io::Result<S> + Send + 'static,
    ) -> Listener {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (seen, stop) = (seen.clone(), stop.clone());
            move || {
                loop {
                    match accept() {
                        Ok(stream) => {
                            let mut tag = String::new();
                            let _ = stream.take(64).read_to_string(&mut tag);
                            seen.lock().unwrap().push(tag.trim().to_string());
                        }
                        // Once stopped, the connections waiting are still
                        // taken before the thread ends.
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => break,
                    }
                }
            }
        });
        Listener {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// On 127.0.0.1, a free port: (listener, port).
    fn tcp() -> (Listener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let served = Listener::serve(move || {
            let (stream, _) = listener.accept()?;
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            Ok(stream)
        });
        (served, port)
    }

    fn unix(listener: UnixListener) -> Listener {
        listener.set_nonblocking(true).unwrap();
        Listener::serve(move || {
            let (stream, _) = listener.accept()?;
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            Ok(stream)
        })
    }

    /// The tags received, once every waiting connection was taken.
    fn stop(mut self) -> Vec<String> {
        self.halt();
        self.seen.lock().unwrap().clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `network = "none"` and `"loopback"`: no connection reaches a listener
/// of the host on 127.0.0.1; a loopback child reaches a server it starts
/// itself (on the very port of the host's listener); `"host"` reaches the
/// host's listener (the control).
#[test]
fn network_none_and_loopback_do_not_reach_the_hosts_listener() {
    let sb = Sandbox::new();
    let (listener, port) = Listener::tcp();
    let connect = |tag: &str, escaped: &str| {
        sh(format!(
            "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo {tag} >&3{escaped}' 2>&1"
        ))
    };
    let own_server = format!(
        r#"cd "$TMPDIR"
/usr/bin/python3 -m http.server {port} --bind 127.0.0.1 > server.log 2>&1 &
server=$!
trap 'kill $server' EXIT
i=0
until /usr/bin/python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:{port}/").status)' > status 2>/dev/null; do
  i=$((i+1)); if [ $i -ge 100 ]; then cat server.log; exit 1; fi; sleep 0.1
done
echo "own_server=$(cat status)" >> "$CAPSTAN_OUTPUT"
"#
    );
    let none = [attack(
        "connect to the host's listener",
        connect("none", " && echo ESC\"\"APED: connected"),
    )];
    let loopback = [
        attack(
            "connect to the host's listener",
            connect("loopback", " && echo ESC\"\"APED: connected"),
        ),
        step("serve on loopback and connect", sh(own_server)),
    ];
    let host = [step("connect to the host's listener", connect("host", ""))];
    let mut toml = pipeline_head("network");
    for (stage, steps, network) in [
        ("none", &none[..], "none"),
        ("loopback", &loopback[..], "loopback"),
        ("host", &host[..], "host"),
    ] {
        toml.push_str(&command_stage(
            stage,
            steps,
            &[&sh_grant(&format!("network = \"{network}\""))],
        ));
    }
    let pipeline = sb.pipeline(&toml);
    let (ran, took) = sb.capstan_within(&["run", pipeline.to_str().unwrap(), "-q"], GUARD);
    eprintln!("the network run took {took:?}");
    let seen = listener.stop();
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    let mut escapes = Escapes::default();
    escapes.check(!seen.iter().any(|t| t != "host"), || {
        format!("the host's listener on 127.0.0.1:{port} was reached from network none/loopback: {seen:?}")
    });
    assert!(
        seen.iter().any(|t| t == "host"),
        "control: network = \"host\" reaches the host's listener: {seen:?}\n{}",
        run.log("host")
    );
    assert_eq!(
        run.output("loopback", "own_server"),
        "200",
        "control: a loopback child reaches its own server: {}",
        run.log("loopback")
    );
    let refused = ["Network is unreachable", "Connection refused"];
    check_steps(&mut escapes, &run, "none", &none, &refused);
    check_steps(&mut escapes, &run, "loopback", &loopback, &refused);
    for stage in ["none", "loopback", "host"] {
        for exec in exec_events(&run, stage) {
            assert_eq!(exec["detail"]["sandbox"]["network"], stage, "{exec:#}");
        }
    }
    escapes.assert_none();
}

/// A connect on a Unix socket is a connect too: a socket file outside the
/// grants (an ssh-agent's, a container daemon's) and an abstract socket of
/// the host are out of reach, with `network = "none"` and with `"host"`.
#[test]
fn unix_sockets_of_the_host_are_out_of_reach() {
    use std::os::linux::net::SocketAddrExt;
    let sb = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap().join("agent.sock");
    let named = Listener::unix(UnixListener::bind(&path).unwrap());
    let name = format!("capstan-test-sandbox-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let unnamed = Listener::unix(UnixListener::bind_addr(&addr).unwrap());
    // `@name` is the abstract socket `name`.
    let connect = |addr: &str, tag: &str| {
        sh(format!(
            r#"/usr/bin/python3 -c '
import socket, sys
a = sys.argv[1]
a = "\0" + a[1:] if a.startswith("@") else a
s = socket.socket(socket.AF_UNIX)
s.connect(a)
s.sendall(sys.argv[2].encode())
print("ESC" + "APED: connected to", sys.argv[1])
' {addr} {tag} 2>&1"#
        ))
    };
    let path = path.display().to_string();
    let abstract_name = format!("@{name}");
    let networks = ["none", "host"];
    let steps = networks.map(|network| {
        [
            attack("connect to a socket file", connect(&path, network)),
            attack(
                "connect to an abstract socket",
                connect(&abstract_name, network),
            ),
        ]
    });
    let mut toml = pipeline_head("unix");
    for (network, steps) in networks.iter().zip(&steps) {
        toml.push_str(&command_stage(
            network,
            steps,
            &[&sh_grant(&format!("network = \"{network}\""))],
        ));
    }
    let pipeline = sb.pipeline(&toml);
    let (ran, _) = sb.capstan_within(&["run", pipeline.to_str().unwrap(), "-q"], GUARD);
    let (named, unnamed) = (named.stop(), unnamed.stop());
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    let mut escapes = Escapes::default();
    escapes.check(named.is_empty(), || {
        format!("children with network {named:?} connected to the socket file {path} outside their grants")
    });
    escapes.check(unnamed.is_empty(), || {
        format!("children with network {unnamed:?} connected to the host's abstract socket {abstract_name}")
    });
    let refused = [
        "Permission denied",
        "Operation not permitted",
        "Connection refused",
        // The socket's directory is hidden by the mount namespace.
        "No such file or directory",
    ];
    for (network, steps) in networks.iter().zip(&steps) {
        check_steps(&mut escapes, &run, network, steps, &refused);
    }
    escapes.assert_none();
}

/// Descriptors the host inherited from whoever started it (a CI agent's
/// pipes, a file opened by a wrapper script) are not passed on: a child
/// cannot read or write a file through one.
#[test]
fn descriptors_the_host_inherited_do_not_reach_its_children() {
    let sb = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let canary = Canary::new(&dir, "canary.txt", "inherited");
    let sink = dir.join("sink.log");
    std::fs::write(&sink, "").unwrap();
    let steps = [
        attack("read descriptor 7", sh("cat <&7 2>&1")),
        attack("write descriptor 8", sh("echo pwned >&8 2>&1")),
    ];
    let pipeline = sb.pipeline(&format!(
        "{}{}",
        pipeline_head("descriptors"),
        command_stage("leak", &steps, &[&sh_grant("")])
    ));
    // Started as a wrapper would: with the canary open as 7, a log as 8.
    let mut cmd = sb.tool("sh");
    cmd.args([
        "-c",
        r#"exec "$0" "$@" 7<"$CANARY" 8>>"$SINK""#,
        env!("CARGO_BIN_EXE_capstan"),
        "run",
        pipeline.to_str().unwrap(),
        "-q",
    ])
    .env("CANARY", &canary.path)
    .env("SINK", &sink);
    let (ran, _) = Guarded::spawn(cmd).wait(GUARD);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    let mut escapes = Escapes::default();
    check_steps(&mut escapes, &run, "leak", &steps, &["Bad file descriptor"]);
    escapes.check(std::fs::read_to_string(&sink).unwrap().is_empty(), || {
        format!("a child wrote {} through descriptor 8", sink.display())
    });
    let files = files_under(&sb.path().join(".capstan"));
    check_nothing_leaked(&mut escapes, &files, &ran, &[&canary]);
    escapes.assert_none();
}

/// Where the kernel lacks Landlock (the fixture pretends so), a run
/// refuses to start before any stage, by default and with `require =
/// true`, naming `[sandbox]` and `require = false`; with `require = false`
/// it runs, and the audit log says the children were not confined.
#[test]
fn without_landlock_a_run_starts_only_when_the_pipeline_accepts_it() {
    let sb = Sandbox::new();
    let stage = command_stage(
        "build",
        &[step("build", sh(r#"echo built=yes >> "$CAPSTAN_OUTPUT""#))],
        &[&sh_grant("")],
    );
    let without_landlock = |sandbox: &str| -> Ran {
        let pipeline = sb.pipeline(&format!(
            "{}{sandbox}\n{stage}",
            pipeline_head("no-landlock")
        ));
        sb.command(&["run", pipeline.to_str().unwrap(), "-q"])
            .env("CAPSTAN_FIXTURE_LANDLOCK_ABI", "0")
            .output()
            .unwrap()
            .into()
    };
    let runs = || {
        std::fs::read_dir(sb.path().join(".capstan/runs"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    for sandbox in ["", "[sandbox]\nrequire = true"] {
        let ran = without_landlock(sandbox);
        assert_ne!(ran.code, 0, "`{sandbox}`: {ran:?}");
        assert!(
            ran.stderr.contains("[sandbox]")
                && ran.stderr.contains("require = false")
                && ran.stderr.contains("Landlock"),
            "`{sandbox}`: the refusal names [sandbox] and `require = false`: {ran:?}"
        );
        assert_eq!(runs(), 0, "`{sandbox}`: a run started: {ran:?}");
    }
    let ran = without_landlock("[sandbox]\nrequire = false");
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    assert_eq!(run.output("build", "built"), "yes");
    let enforced = &start_event(&run, "build")["detail"]["sandbox"]["enforced"];
    assert!(
        enforced.as_str().is_some_and(|e| e.starts_with("none")),
        "the audit log says the children were not confined: {enforced}"
    );
    for exec in exec_events(&run, "build") {
        assert_eq!(&exec["detail"]["sandbox"]["files"], enforced, "{exec:#}");
    }
}

/// Limits of an exec grant hold for the program and what it starts:
/// `open_files`, `address_space`, `cpu`. A program over its CPU time is
/// killed and fails its stage, naming it; the other stages still run and
/// the run records everything.
#[test]
fn a_child_stops_at_its_grants_limits() {
    let sb = Sandbox::new();
    let open_files = [attack(
        "open 100 files",
        sh(r#"echo "nofile=$(ulimit -n)" >> "$CAPSTAN_OUTPUT"
/usr/bin/python3 -c '
import sys
files = []
try:
    for i in range(100):
        files.append(open("f%d" % i, "w"))
except OSError as e:
    print("opened %d files, then: %s" % (len(files), e))
    sys.exit(1)
print("ESC" + "APED: opened 100 files")
' 2>&1"#),
    )];
    let address_space = [
        step(
            "allocate 1 MiB",
            sh(r#"echo "vmem=$(ulimit -v)" >> "$CAPSTAN_OUTPUT"
dd if=/dev/zero of=/dev/null bs=1M count=4 2>&1"#),
        ),
        attack(
            "allocate 256 MiB",
            sh("dd if=/dev/zero of=/dev/null bs=256M count=1 2>&1"),
        ),
    ];
    let cpu = [step("spin", sh("while :; do :; done"))];
    let after = [step("after", sh(r#"echo "ran=yes" >> "$CAPSTAN_OUTPUT""#))];
    let mut toml = pipeline_head("limits");
    toml.push_str(&command_stage(
        "open_files",
        &open_files,
        &[&sh_grant("limits = { open_files = 32 }")],
    ));
    toml.push_str(&command_stage(
        "address_space",
        &address_space,
        &[&sh_grant("limits = { address_space = \"64MiB\" }")],
    ));
    toml.push_str(&command_stage(
        "cpu",
        &cpu,
        &[&sh_grant("limits = { cpu = \"1s\" }")],
    ));
    toml.push_str(&command_stage("after", &after, &[&sh_grant("")]));
    let pipeline = sb.pipeline(&toml);
    let (ran, took) = sb.capstan_within(&["run", pipeline.to_str().unwrap(), "-q"], GUARD);
    eprintln!("the limits run took {took:?}");
    assert_eq!(ran.code, 1, "the spinning stage fails the run: {ran:?}");
    let run = sb.last_run();
    let mut escapes = Escapes::default();

    assert_eq!(run.output("open_files", "nofile"), "32");
    check_steps(
        &mut escapes,
        &run,
        "open_files",
        &open_files,
        &["Too many open files"],
    );
    assert_eq!(run.output("address_space", "vmem"), "65536");
    check_steps(
        &mut escapes,
        &run,
        "address_space",
        &address_space,
        &["memory exhausted", "Cannot allocate memory"],
    );

    run.assert_failed_naming("cpu", &["step `spin`", "`sh -c", "failed with signal"]);
    let exit = run
        .audit_of("cpu")
        .into_iter()
        .find(|e| e["capability"] == "exec-exit")
        .unwrap_or_else(|| panic!("cpu: no exec-exit in audit.jsonl"));
    let signal = exit["detail"]["status"]["signal"].as_i64();
    assert!(
        signal == Some(i64::from(libc::SIGXCPU)) || signal == Some(i64::from(libc::SIGKILL)),
        "the spinning `sh` was killed by SIGXCPU or SIGKILL: {exit:#}"
    );
    assert_eq!(
        run.output("after", "ran"),
        "yes",
        "{:#}",
        run.stage("after")
    );
    for stage in ["open_files", "address_space", "cpu", "after"] {
        assert!(
            run.audit_of(stage)
                .iter()
                .any(|e| e["capability"] == "stage"
                    && ["succeeded", "failed"]
                        .contains(&e["detail"]["event"].as_str().unwrap_or(""))),
            "{stage}: its end is in audit.jsonl"
        );
    }
    escapes.assert_none();
}

/// Kills, when dropped, the processes whose command line starts with one
/// of its prefixes (distinctive ones the test started itself).
struct KillOnDrop(&'static [&'static str]);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in self.0.iter().flat_map(|p| processes_starting(p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Living processes whose command line (arguments joined by spaces)
/// starts with `prefix`.
fn processes_starting(prefix: &str) -> Vec<i64> {
    crate::harness::processes_where(|line| line.starts_with(prefix.as_bytes()))
}

/// A `setsid` child and a double-forked one (both ignoring SIGTERM and
/// SIGHUP) are gone when their stage ends: the next stage finds none; and
/// one left by the last stage is gone when the run ends, i.e. before the
/// environment's lock is released.
#[test]
fn a_setsid_survivor_is_gone_when_its_stage_ends_and_the_lock_is_held_until_then() {
    let _cleanup = KillOnDrop(&["sleep 313"]);
    let sb = Sandbox::new();
    let leave = |seconds: &str| {
        sh(format!(
            r#"setsid sh -c 'trap "" HUP TERM; exec sleep {seconds}' > /dev/null 2>&1 < /dev/null &
(setsid sh -c 'trap "" HUP TERM; exec sleep {seconds}2' > /dev/null 2>&1 < /dev/null &)
echo left"#
        ))
    };
    let look = sh(r#"for d in /proc/[0-9]*; do
  c=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null)
  case "$c" in "sleep 313"*) echo "survivor $d: $c";; esac
done > survivors
echo "survivors=$(wc -l < survivors)" >> "$CAPSTAN_OUTPUT"
cat survivors"#);
    let mut toml = pipeline_head("survivors");
    toml.push_str(&command_stage(
        "spawn",
        &[step("leave survivors", leave("3131"))],
        &[&sh_grant("")],
    ));
    toml.push_str(&with_keys(
        command_stage(
            "look",
            &[step("look for survivors", look)],
            &[&sh_grant("")],
        ),
        "look",
        "needs = [\"spawn\"]",
    ));
    toml.push_str(&with_keys(
        command_stage(
            "last",
            &[step("leave a survivor", leave("3133"))],
            &[&sh_grant("")],
        ),
        "last",
        "needs = [\"look\"]",
    ));
    let pipeline = sb.pipeline(&toml);
    let (ran, _) = sb.capstan_within(
        &["run", pipeline.to_str().unwrap(), "--env", "dev", "-q"],
        GUARD,
    );
    // The run has ended, its lock released: none of its processes lives.
    let survivors = processes_starting("sleep 313");
    assert!(
        survivors.is_empty(),
        "processes of the run outlived it (and its environment lock): {survivors:?}"
    );
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    assert_eq!(
        run.output("look", "survivors"),
        "0",
        "the survivors of `spawn` outlived their stage:\n{}",
        run.log("look")
    );
}

/// A fork bomb stops at `limits.processes`, fails its stage only (the
/// other stage runs) and leaves no process. A bounded flood goes first:
/// unless it stops at the limit, the bomb is not started.
#[test]
fn a_fork_bomb_stops_at_its_process_limit_and_fails_its_stage_only() {
    let _cleanup = KillOnDrop(&["sleep 3141", "capstan-bomb-3151"]);
    let sb = Sandbox::new();
    let limited = sh_grant("limits = { processes = 64 }");
    // 200 processes at most, limit or not.
    let flood = [attack(
        "start 200 processes",
        sh(
            r#"i=0; while [ $i -lt 200 ]; do sleep 3141 & i=$((i+1)); done 2>&1
echo "ESC""APED: started 200 processes""#,
        ),
    )];
    let pipeline = sb.pipeline(&format!(
        "{}{}",
        pipeline_head("flood"),
        command_stage("flood", &flood, &[&limited])
    ));
    let (ran, _) = sb.capstan_within(&["run", pipeline.to_str().unwrap(), "-q"], GUARD);
    // A refused fork fails the stage, named (whatever the program made of
    // it), and nothing of it is left.
    assert_eq!(ran.code, 1, "{ran:?}");
    let run = sb.last_run();
    assert!(
        run.log("flood").contains("Cannot fork")
            || run
                .log("flood")
                .contains("Resource temporarily unavailable"),
        "the 65th process was started:\n{}",
        run.log("flood")
    );
    assert!(
        !run.log("flood").contains("ESCAPED"),
        "{}",
        run.log("flood")
    );
    assert!(
        run.stage("flood")["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("process limit of 64 reached"),
        "{:#}",
        run.stage("flood")
    );
    assert!(processes_starting("sleep 3141").is_empty());

    let bomb = [step(
        "bomb",
        sh(r#"bash -c 'exec -a capstan-bomb-3151 bash -c ":(){ :|:& };:; wait"' 2>&1"#),
    )];
    let other = [step("other", sh(r#"echo "ran=yes" >> "$CAPSTAN_OUTPUT""#))];
    let pipeline = sb.pipeline(&format!(
        "{}{}{}",
        pipeline_head("bomb"),
        with_keys(
            command_stage("bomb", &bomb, &[&limited]),
            "bomb",
            "timeout = \"20s\""
        ),
        command_stage("other", &other, &[&sh_grant("")]),
    ));
    let (ran, _) = sb.capstan_within(&["run", pipeline.to_str().unwrap(), "-q"], GUARD);
    let left = processes_starting("capstan-bomb-3151");
    assert!(
        left.is_empty(),
        "processes of the bomb outlived its run: {left:?}"
    );
    assert_eq!(ran.code, 1, "{ran:?}");
    let run = sb.last_run();
    assert_eq!(run.status("bomb"), "failed", "{:#}", run.stage("bomb"));
    assert_eq!(
        run.output("other", "ran"),
        "yes",
        "{:#}",
        run.stage("other")
    );
}

/// A stage racing the sandbox of the next: it swaps the directory the next
/// stage is granted for a symlink into Capstan's state before that stage
/// starts. The next stage's programs still get the directory that was
/// checked (their rules and mounts come from its handle), never the state.
#[test]
fn a_grant_swapped_for_a_symlink_by_an_upstream_stage_stays_the_checked_directory() {
    let sb = Sandbox::new();
    let area = sb.path().join("area");
    std::fs::create_dir_all(area.join("ro")).unwrap();
    std::fs::write(area.join("ro/granted.txt"), "checked-directory").unwrap();
    // The command stage needs a read grant to run at all.
    std::fs::create_dir_all(sb.path().join("docs")).unwrap();
    let (area_s, state) = (
        area.display(),
        sb.path().join(".capstan").display().to_string(),
    );
    let swap = [step(
        "swap",
        sh(format!(
            "mv {area_s}/ro {area_s}/ro.old && ln -s {state} {area_s}/ro && ls -la {area_s}"
        )),
    )];
    let after = [
        step("granted", sh(format!("cat {area_s}/ro/granted.txt"))),
        attack(
            "read the store through the swapped path",
            sh(format!("head -c 16 {area_s}/ro/capstan.db 2>&1")),
        ),
    ];
    let stage = |name: &str, steps: &[Step], grants: &str| {
        let mut toml = command_stage(name, steps, &[&sh_grant("")]);
        toml = toml.replace(
            &format!("[stages.{name}.grants]\nread = [\"ro\"]\n"),
            &format!("[stages.{name}.grants]\n{grants}\n"),
        );
        toml
    };
    let pipeline = sb.pipeline(&format!(
        "{}{}{}",
        pipeline_head("race"),
        stage("swap", &swap, "read = [\"docs\"]\nwrite = [\"area\"]"),
        with_keys(
            stage("use", &after, "read = [\"area/ro\"]"),
            "use",
            "needs = [\"swap\"]"
        ),
    ));
    let (ran, _) = sb.capstan_within(&["run", pipeline.to_str().unwrap(), "-q"], GUARD);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    assert!(
        std::fs::symlink_metadata(area.join("ro"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the upstream stage did not swap the grant: {}",
        run.log("swap")
    );
    assert!(
        run.log("use").contains("checked-directory"),
        "{}",
        run.log("use")
    );
    assert!(
        !run.log("use").contains("SQLite format"),
        "{}",
        run.log("use")
    );
    let mut escapes = Escapes::default();
    check_steps(&mut escapes, &run, "use", &after, DENIED);
    escapes.assert_none();
}
