//! The per-user compiled-plugin cache: shared by every state dir, trusted
//! only with the key kept apart from it, refused when it is not this user's
//! alone, never followed through a symlink.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{Ran, Run, Sandbox, adversary_stage};

const HELLO: &str = r#"
[pipeline]
name = "hello"

[plugins.hello]
path = "{hello}"

[stages.greet]
plugin = "hello"
with = { message = "hello from hello" }
[[stages.greet.grants.exec]]
program = "echo"
args = ["*"]
"#;

/// `capstan run` of `pipeline` with the state dir `state` (in the sandbox),
/// which must succeed, and the run it recorded there.
fn run_in(sb: &Sandbox, state: &str, pipeline: &Path, flags: &[&str]) -> (Ran, Run) {
    ran_in(sb, state, pipeline, flags, |_| {})
}

/// The same, with `adjust` applied to the command first.
fn ran_in(
    sb: &Sandbox,
    state: &str,
    pipeline: &Path,
    flags: &[&str],
    adjust: impl FnOnce(&mut std::process::Command),
) -> (Ran, Run) {
    let state = sb.path().join(state);
    let mut cmd = sb.command(
        &[
            &["--state-dir", state.to_str().unwrap()],
            &["run", pipeline.to_str().unwrap(), "-q"][..],
            flags,
        ]
        .concat(),
    );
    adjust(&mut cmd);
    let ran: Ran = cmd.output().expect("run capstan").into();
    assert_eq!(ran.code, 0, "{ran:?}");
    let runs = state.join("runs");
    let dir = std::fs::read_dir(&runs)
        .unwrap_or_else(|e| panic!("no run in {}: {e}; {ran:?}", runs.display()))
        .map(|e| e.unwrap().path())
        .max()
        .expect("a run");
    (ran, Run::read(&dir))
}

/// How the run got plugin `name`: hit, miss, recompiled or disabled.
fn cache_of(run: &Run, name: &str) -> Value {
    run.record["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name}: {:#}", run.record))["cache"]
        .clone()
}

/// The compiled entries (`.cwasm`) kept in the cache dir `dir`.
fn compiled(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join("components")) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

#[test]
fn a_fresh_state_dir_loads_what_another_state_dir_compiled() {
    let sb = Sandbox::new();
    let p = sb.pipeline(HELLO);
    let (_, first) = run_in(&sb, "state-a", &p, &[]);
    assert_eq!(cache_of(&first, "hello"), "miss");
    assert_eq!(compiled(&sb.user_cache()).len(), 1);
    let (_, fresh) = run_in(&sb, "state-b", &p, &[]);
    assert_eq!(
        cache_of(&fresh, "hello"),
        "hit",
        "no compile in a fresh state dir"
    );
    assert_eq!(fresh.output("greet", "message"), "hello from hello");
    for state in ["state-a", "state-b"] {
        assert!(
            compiled(&sb.path().join(state).join("cache")).is_empty(),
            "nothing compiled kept in {state}"
        );
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sb.user_cache()), 0o700);
    assert_eq!(mode(&sb.user_cache_key()), 0o600);
    // --no-cache compiles and uses nothing: the entry is left as it was.
    let entry = &compiled(&sb.user_cache())[0];
    let before = std::fs::read(entry).unwrap();
    std::fs::write(entry, b"not compiled code").unwrap();
    let (ran, cold) = run_in(&sb, "state-c", &p, &["--no-cache"]);
    assert_eq!(cache_of(&cold, "hello"), "disabled");
    assert_eq!(std::fs::read(entry).unwrap(), b"not compiled code");
    assert!(!ran.stderr.contains("warning"), "{ran:?}");
    // `--cache-dir none`: each state dir keeps its own again.
    std::fs::write(entry, before).unwrap();
    let (_, own) = run_in(&sb, "state-d", &p, &["--cache-dir", "none"]);
    assert_eq!(cache_of(&own, "hello"), "miss");
    assert_eq!(compiled(&sb.path().join("state-d/cache")).len(), 1);
    // A cache dir given with nowhere to keep its key: said, and not used.
    let given = sb.path().join("given");
    let (ran, _) = ran_in(
        &sb,
        "state-e",
        &p,
        &["--cache-dir", given.to_str().unwrap()],
        |cmd| {
            cmd.env_remove("HOME").env_remove("XDG_STATE_HOME");
        },
    );
    assert!(
        ran.stderr
            .contains("neither $XDG_STATE_HOME nor $HOME is set"),
        "{ran:?}"
    );
    assert_eq!(compiled(&sb.path().join("state-e/cache")).len(), 1);
    assert!(!given.exists());
}

/// A stage granted write access to the per-user cache (allowed: it is not
/// where the key is) overwrites hello's compiled entry. The next run, in
/// another state dir, does not run what it wrote: hello is compiled again,
/// recorded as `recompiled` and warned about, and behaves as itself.
#[test]
fn an_entry_a_stage_wrote_into_the_shared_cache_is_not_run() {
    let sb = Sandbox::new();
    let p = sb.pipeline(HELLO);
    run_in(&sb, "state-a", &p, &[]);
    let entry = compiled(&sb.user_cache()).pop().expect("hello's entry");
    let attack = sb.write(
        "attack.toml",
        &sb.fill(&format!(
            "[pipeline]\nname = \"attack\"\n[plugins.adversary]\npath = \"{{adversary}}\"\n{}",
            adversary_stage(
                "forge",
                &format!(
                    r#"{{ action = "write-file", path = "{}", content = "forged code" }}"#,
                    entry.display()
                ),
                "",
            )
            .replace(r#"write = ["rw"]"#, r#"write = ["rw", "xdg-cache"]"#)
        )),
    );
    let (_, forged) = run_in(&sb, "state-attack", &attack, &[]);
    assert_eq!(forged.status("forge"), "succeeded");
    assert_eq!(std::fs::read(&entry).unwrap(), b"forged code");

    let (ran, second) = run_in(&sb, "state-b", &p, &[]);
    assert_eq!(cache_of(&second, "hello"), "recompiled");
    assert!(
        ran.stderr.contains("warning") && ran.stderr.contains("`hello`"),
        "no warning names the rejected entry: {ran:?}"
    );
    assert_eq!(second.output("greet", "message"), "hello from hello");
    // Replaced by the host's own, trusted again.
    let (_, third) = run_in(&sb, "state-c", &p, &[]);
    assert_eq!(cache_of(&third, "hello"), "hit");
}

/// No grant may reach the key (a stage that read it could make entries the
/// host trusts), while the entries may lie in a grant.
#[test]
fn a_grant_that_reaches_the_cache_key_is_refused() {
    let sb = Sandbox::new();
    let p = sb.pipeline(HELLO);
    run_in(&sb, "state-a", &p, &[]);
    let p = sb.pipeline(&format!(
        "{HELLO}[stages.greet.grants]\nread = [\"xdg-state\"]\n"
    ));
    let ran = sb.capstan(&["run", p.to_str().unwrap(), "-q"]);
    assert_eq!(ran.code, 4, "{ran:?}");
    for words in [
        "reaches Capstan's per-user compiled-plugin cache key",
        &sb.user_cache_key().display().to_string(),
        "move it with $XDG_STATE_HOME",
    ] {
        assert!(ran.stderr.contains(words), "{words}: {ran:?}");
    }
}

/// Refused per-user caches: the run says why, compiles, keeps what it
/// compiled in its state dir, and writes nothing where it was refused.
fn refused(sb: &Sandbox, state: &str, flags: &[&str], words: &[&str]) -> Run {
    let p = sb.pipeline(HELLO);
    let (ran, run) = run_in(sb, state, &p, flags);
    assert!(
        ran.stderr
            .contains("warning: not using the per-user compiled-plugin cache"),
        "{ran:?}"
    );
    for word in words {
        assert!(ran.stderr.contains(word), "{word}: {ran:?}");
    }
    assert_eq!(cache_of(&run, "hello"), "miss");
    assert_eq!(compiled(&sb.path().join(state).join("cache")).len(), 1);
    run
}

#[test]
fn a_cache_dir_others_may_write_is_not_used() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.user_cache()).unwrap();
    std::fs::set_permissions(sb.user_cache(), std::fs::Permissions::from_mode(0o777)).unwrap();
    refused(
        &sb,
        "s",
        &[],
        &["writable by its group or by everyone", "chmod 700"],
    );
    assert!(compiled(&sb.user_cache()).is_empty());
    std::fs::set_permissions(sb.user_cache(), std::fs::Permissions::from_mode(0o770)).unwrap();
    refused(&sb, "s2", &[], &["mode 770"]);
}

#[test]
fn a_cache_dir_of_another_user_is_not_used() {
    let sb = Sandbox::new();
    if nix::unistd::geteuid().is_root() {
        std::fs::create_dir_all(sb.user_cache()).unwrap();
        std::fs::set_permissions(sb.user_cache(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::chown(&sb.user_cache(), Some(nobody), None).unwrap();
        refused(
            &sb,
            "s",
            &[],
            &["owned by uid 65534, not by this user (uid 0)"],
        );
        assert!(compiled(&sb.user_cache()).is_empty());
    } else {
        // Not root: root's own directory is another user's.
        refused(&sb, "s", &["--cache-dir", "/"], &["/ is owned by uid 0"]);
    }
}

#[test]
fn a_symlinked_cache_dir_is_not_followed() {
    let sb = Sandbox::new();
    let elsewhere = sb.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(sb.user_cache().parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, sb.user_cache()).unwrap();
    refused(&sb, "s", &[], &["is a symbolic link"]);
    assert!(
        std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "nothing written through the link"
    );
}

/// A disk that fills while an entry is written (here: writes past 512 KiB
/// fail, as RLIMIT_FSIZE makes them, with SIGXFSZ ignored) costs the run
/// nothing: the plugin runs, no partial entry or temporary file is left,
/// and the next run compiles it as never cached (`miss`, not `recompiled`).
/// Then a symlink in the entry's place, to the entry itself, is not
/// followed: recompiled, and replaced by an entry.
#[test]
fn an_entry_the_disk_could_not_hold_or_a_symlink_in_its_place_is_not_used() {
    use nix::sys::resource::{Resource, setrlimit};
    use nix::sys::signal::{SigHandler, Signal, signal};
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new();
    let p = sb.pipeline(HELLO);
    let full_at_512k = |cmd: &mut std::process::Command| {
        // SAFETY: between fork and exec, only async-signal-safe calls.
        unsafe {
            cmd.pre_exec(|| {
                signal(Signal::SIGXFSZ, SigHandler::SigIgn)?;
                setrlimit(Resource::RLIMIT_FSIZE, 512 << 10, 512 << 10)?;
                Ok(())
            });
        }
    };
    let (_, full) = ran_in(&sb, "state-a", &p, &[], full_at_512k);
    assert_eq!(full.output("greet", "message"), "hello from hello");
    let left: Vec<_> = std::fs::read_dir(sb.user_cache().join("components"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".info"))
        .collect();
    assert!(left.is_empty(), "only whole files are left: {left:?}");
    let (ran, next) = run_in(&sb, "state-b", &p, &[]);
    assert_eq!(cache_of(&next, "hello"), "miss");
    assert!(!ran.stderr.contains("warning"), "{ran:?}");

    let entry = compiled(&sb.user_cache()).pop().unwrap();
    let elsewhere = sb.path().join("elsewhere.cwasm");
    std::fs::rename(&entry, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
    let (_, run) = run_in(&sb, "state-c", &p, &[]);
    assert_eq!(cache_of(&run, "hello"), "recompiled");
    assert!(!std::fs::symlink_metadata(&entry).unwrap().is_symlink());
}
