//! The notify stage (`plugins/notify`) and `run_if`: Slack and Teams
//! payloads delivered to a webhook receiver on loopback started by the
//! test, on success and, with `run_if = "failure"`, after a failed stage;
//! a paused run told, then its resumption told once; an ungranted URL
//! refused, naming the grant.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::harness::{Ran, Sandbox};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Value,
}

/// A webhook receiver on 127.0.0.1: records every request and answers
/// 200. It stops when dropped (at the end of the test).
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (got, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                if let Some(request) = read(&mut stream) {
                    got.lock().unwrap().push(request);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        });
        Receiver {
            port,
            requests,
            stop,
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests to `path`.
    fn to(&self, path: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept so that the thread sees the flag and ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One HTTP/1.1 request with a Content-Length body.
fn read(stream: &mut TcpStream) -> Option<Received> {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let (head, length) = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            got.drain(..end + 4);
            break (head, length);
        }
    };
    while got.len() < length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Received {
        method,
        path,
        headers,
        body: serde_json::from_slice(&got).unwrap_or(Value::Null),
    })
}

/// The webhook paths: their tokens must never be logged or audited.
const SLACK_PATH: &str = "/services/T0/B0/slack-secret-token";
const TEAMS_PATH: &str = "/workflows/w1/triggers/manual?sig=teams-secret-sig";

const HEAD: &str = r#"
[pipeline]
name = "notified"
environments = ["dev"]
[defaults]
timeout = "60s"
[plugins.command]
path = "{command}"
[plugins.notify]
path = "{notify}"
"#;

/// A command stage running `program` (`true` or `false`).
fn command(name: &str, program: &str, needs: &[&str]) -> String {
    format!(
        r#"
[stages.{name}]
plugin = "command"
needs = {needs:?}
with = {{ run = ["{program}"] }}
[[stages.{name}.grants.exec]]
program = "{program}"
env = ["CAPSTAN_OUTPUT"]
[stages.{name}.grants]
read = ["ro"]
"#
    )
}

/// A notify stage in `format` after `needs`, its URL from `var`, granted
/// `connect`.
fn notify(
    name: &str,
    format: &str,
    var: &str,
    needs: &[&str],
    run_if: &str,
    connect: &str,
) -> String {
    format!(
        r#"
[stages.{name}]
plugin = "notify"
needs = {needs:?}
run_if = "{run_if}"
with = {{ format = "{format}", url_env = "{var}", status = "${{run.status}}", stages = "${{run.stages}}", link = "https://ci.example/jobs/7" }}
[stages.{name}.grants]
env = ["{var}"]
connect = ["{connect}"]
"#
    )
}

/// `capstan <args>` with the webhook URLs of `receiver` in its environment.
fn capstan(sb: &Sandbox, receiver: &Receiver, args: &[&str]) -> Ran {
    let base = format!("http://127.0.0.1:{}", receiver.port);
    sb.command(args)
        .env("SLACK_WEBHOOK_URL", format!("{base}{SLACK_PATH}"))
        .env("TEAMS_WEBHOOK_URL", format!("{base}{TEAMS_PATH}"))
        .output()
        .expect("run capstan")
        .into()
}

/// No token of a webhook URL is in the run's logs, audit log or record.
fn assert_tokens_kept_out(run: &crate::harness::Run) {
    let mut texts = vec![
        std::fs::read_to_string(run.dir.join("audit.jsonl")).unwrap(),
        run.record.to_string(),
    ];
    for entry in std::fs::read_dir(run.dir.join("logs")).unwrap() {
        texts.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    for text in texts {
        for token in ["slack-secret-token", "teams-secret-sig"] {
            assert!(!text.contains(token), "`{token}` leaked: {text}");
        }
    }
}

/// The Slack fields and text of a payload, as one string per field.
fn slack_fields(body: &Value) -> Vec<String> {
    body["blocks"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap().to_string())
        .collect()
}

/// The facts of the first fact set of a Teams card, as (title, value).
fn teams_facts(body: &Value) -> Vec<(String, String)> {
    let card = &body["attachments"][0]["content"];
    card["body"][1]["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap().to_string();
            (text("title"), text("value"))
        })
        .collect()
}

#[test]
fn a_successful_run_is_told_to_slack_and_teams_and_a_failure_notifier_is_skipped() {
    let sb = Sandbox::new();
    let receiver = Receiver::start();
    let grant = format!("127.0.0.1:{}", receiver.port);
    let pipeline = sb.pipeline(&format!(
        "{HEAD}{}{}{}{}",
        command("build", "true", &[]),
        notify(
            "slack",
            "slack",
            "SLACK_WEBHOOK_URL",
            &["build"],
            "always",
            &grant
        ),
        notify(
            "teams",
            "teams",
            "TEAMS_WEBHOOK_URL",
            &["build"],
            "success",
            &grant
        ),
        notify(
            "on-failure",
            "slack",
            "SLACK_WEBHOOK_URL",
            &["build"],
            "failure",
            &grant
        ),
    ));
    let file = pipeline.to_str().unwrap();

    // Audit and a dry run show when each stage runs, and what notify may do.
    let audit = sb.json(&["audit", file, "--json"]);
    let run_ifs: Vec<(&str, &str)> = audit["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap(), s["run_if"].as_str().unwrap()))
        .collect();
    assert_eq!(
        run_ifs,
        [
            ("build", "success"),
            ("slack", "always"),
            ("teams", "success"),
            ("on-failure", "failure")
        ]
    );
    let text = sb.capstan(&["audit", file]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout.contains("run_if   failure (runs once the stages it needs have ended, if one failed or waits for approval)"),
        "{text:?}"
    );
    assert!(
        text.stdout
            .contains("env `*` (the variables the stage grants)"),
        "{text:?}"
    );
    let dry = sb.capstan(&["run", file, "--dry-run"]);
    assert!(
        dry.stdout.contains("on-failure: notify ")
            && dry.stdout.contains("after build (run_if = \"failure\")"),
        "{dry:?}"
    );

    let ran = capstan(&sb, &receiver, &["run", file, "-q"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    let id = run.record["run_id"].as_str().unwrap().to_string();
    assert_eq!(run.record["status"], "succeeded");
    for stage in ["build", "slack", "teams"] {
        assert_eq!(
            run.status(stage),
            "succeeded",
            "{stage}: {:#}",
            run.stage(stage)
        );
    }
    assert_eq!(run.status("on-failure"), "skipped");
    assert_eq!(
        run.reason("on-failure"),
        "nothing before it failed or waits for approval (run_if = \"failure\")"
    );
    assert_eq!(run.output("slack", "delivered"), true);
    assert_eq!(run.output("slack", "http_status"), 200);

    // Slack: its text, the header, the facts, the stages, the commands.
    let slack = receiver.to(SLACK_PATH);
    assert_eq!(slack.len(), 1, "{:#?}", receiver.requests());
    let (request, body) = (&slack[0], &slack[0].body);
    assert_eq!(request.method, "POST");
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(
        body["text"],
        format!("✅ notified succeeded in dev (run {id})").as_str()
    );
    assert_eq!(body["blocks"][0]["type"], "header");
    assert_eq!(
        body["blocks"][0]["text"]["text"],
        "✅ notified succeeded in dev"
    );
    assert_eq!(
        slack_fields(body),
        [
            "*Pipeline*\nnotified".to_string(),
            "*Environment*\ndev".into(),
            format!("*Run*\n`{id}`"),
            "*Status*\nsucceeded".into(),
        ]
    );
    let stages = body["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(
        stages.starts_with("*Stages*\n✓ `build` succeeded — "),
        "{stages}"
    );
    assert_eq!(
        body["blocks"][3]["elements"][0]["text"],
        format!("`capstan show {id}` · <https://ci.example/jobs/7|Open the run>").as_str()
    );

    // Teams: an Adaptive Card in a message.
    let teams = receiver.to(TEAMS_PATH);
    assert_eq!(teams.len(), 1, "{:#?}", receiver.requests());
    let body = &teams[0].body;
    assert_eq!(body["type"], "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(attachment["content"]["type"], "AdaptiveCard");
    assert_eq!(attachment["content"]["body"][0]["color"], "Good");
    assert_eq!(
        teams_facts(body),
        [
            ("Pipeline".to_string(), "notified".to_string()),
            ("Environment".into(), "dev".into()),
            ("Run".into(), id.clone()),
            ("Status".into(), "succeeded".into()),
        ]
    );
    assert_eq!(
        attachment["content"]["actions"][0]["url"],
        "https://ci.example/jobs/7"
    );

    // The audit log has each post's origin and size, never its path or body.
    let posts: Vec<&Value> = run
        .audit_of("slack")
        .into_iter()
        .filter(|e| e["capability"] == "connect")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    let detail = &posts[0]["detail"];
    assert_eq!(posts[0]["allowed"], true);
    assert_eq!(detail["method"], "POST");
    assert_eq!(
        detail["url"],
        format!("http://127.0.0.1:{}", receiver.port).as_str()
    );
    assert_eq!(detail["result"]["status"], 200);
    let sent = serde_json::to_vec(&slack[0].body).unwrap().len();
    assert_eq!(detail["bytes"].as_u64(), Some(sent as u64));
    assert_tokens_kept_out(&run);
}

#[test]
fn after_a_failed_stage_failure_notifiers_deliver_and_an_ungranted_url_is_refused() {
    let sb = Sandbox::new();
    let receiver = Receiver::start();
    let grant = format!("127.0.0.1:{}", receiver.port);
    let other = format!("127.0.0.1:{}", receiver.port.wrapping_add(1).max(1));
    let pipeline = sb.pipeline(&format!(
        "{HEAD}{}{}{}{}{}{}",
        command("build", "true", &[]),
        command("smoke", "false", &["build"]),
        command("after", "true", &["smoke"]),
        notify(
            "slack",
            "slack",
            "SLACK_WEBHOOK_URL",
            &["smoke"],
            "failure",
            &grant
        ),
        notify(
            "teams",
            "teams",
            "TEAMS_WEBHOOK_URL",
            &["after"],
            "failure",
            &grant
        ),
        notify(
            "refused",
            "slack",
            "SLACK_WEBHOOK_URL",
            &["smoke"],
            "failure",
            &other
        ),
    ));
    let ran = capstan(&sb, &receiver, &["run", pipeline.to_str().unwrap(), "-q"]);
    assert_eq!(ran.code, 1, "the run failed: {ran:?}");
    let run = sb.last_run();
    let id = run.record["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        run.record["status"], "failed",
        "notifiers that delivered do not make it succeed"
    );
    assert_eq!(run.status("smoke"), "failed");
    assert_eq!(run.status("after"), "skipped");
    assert_eq!(run.status("slack"), "succeeded", "{:#}", run.stage("slack"));
    // `after` was skipped because smoke failed: teams, after it, reports it.
    assert_eq!(run.status("teams"), "succeeded", "{:#}", run.stage("teams"));
    let smoke_reason = run.reason("smoke");

    let slack = receiver.to(SLACK_PATH);
    assert_eq!(
        slack.len(),
        1,
        "only `slack` reached the receiver: {:#?}",
        receiver.requests()
    );
    let body = &slack[0].body;
    assert_eq!(
        body["text"],
        format!("❌ notified in dev failed at `smoke` (run {id})").as_str()
    );
    assert_eq!(slack_fields(body)[3], "*Status*\nfailed");
    let failed = body["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(failed.starts_with("*Failed:* `smoke`\n"), "{failed}");
    let first_words: String = smoke_reason
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        failed.contains(&first_words),
        "{failed} lacks {first_words}"
    );
    let stages = body["blocks"][3]["text"]["text"].as_str().unwrap();
    assert!(stages.contains("✓ `build` succeeded"), "{stages}");
    assert!(stages.contains("✗ `smoke` failed"), "{stages}");
    assert!(
        body["blocks"][4]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains(&format!("`capstan logs {id} smoke`")),
        "{body:#}"
    );

    let teams = receiver.to(TEAMS_PATH);
    assert_eq!(teams.len(), 1, "{:#?}", receiver.requests());
    let card = &teams[0].body["attachments"][0]["content"];
    assert_eq!(card["body"][0]["text"], "❌ notified failed in dev");
    assert_eq!(card["body"][0]["color"], "Attention");
    assert_eq!(card["body"][2]["text"], "Failed: smoke");
    let facts = card["body"][5]["facts"].as_array().unwrap();
    let after = facts.iter().find(|f| f["title"] == "after").unwrap();
    assert_eq!(after["value"], "– skipped");

    // The port its `connect` does not grant: refused before any connection,
    // the reason naming the grant to add, the denial audited.
    run.assert_failed_naming(
        "refused",
        &[
            &format!("connect to `127.0.0.1:{}` is not granted", receiver.port),
            &other,
            "add it to `connect`",
        ],
    );
    let denials = run.denials("refused");
    assert_eq!(denials.len(), 1, "{denials:#?}");
    assert_eq!(denials[0]["capability"], "connect");
    assert_eq!(
        denials[0]["detail"]["url"],
        format!("http://127.0.0.1:{}", receiver.port).as_str()
    );
    assert_tokens_kept_out(&run);
}

#[test]
fn a_paused_run_is_told_and_its_resumption_told_once() {
    let sb = Sandbox::new();
    let receiver = Receiver::start();
    let grant = format!("127.0.0.1:{}", receiver.port);
    let pipeline = sb.pipeline(&format!(
        r#"{HEAD}
[plugins.approval]
path = "{{approval}}"
[stages.approve]
plugin = "approval"
with = {{ digest = "3f1c9a0b2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8" }}
[stages.approve.grants]
approval = true
{}{}{}"#,
        command("deploy", "true", &["approve"]),
        notify(
            "slack",
            "slack",
            "SLACK_WEBHOOK_URL",
            &["deploy"],
            "always",
            &grant
        ),
        notify(
            "teams",
            "teams",
            "TEAMS_WEBHOOK_URL",
            &["deploy"],
            "failure",
            &grant
        ),
    ));
    let paused = capstan(
        &sb,
        &receiver,
        &["run", pipeline.to_str().unwrap(), "-q", "--as", "alice"],
    );
    assert_eq!(paused.code, 5, "the run waits for approval: {paused:?}");
    let id = sb.newest_run_id();
    let run = sb.last_run();
    assert_eq!(
        run.record["status"], "awaiting-approval",
        "notifiers that delivered keep it paused"
    );
    assert_eq!(run.status("slack"), "succeeded", "{:#}", run.stage("slack"));
    assert_eq!(
        run.status("teams"),
        "succeeded",
        "waiting counts for `failure`"
    );

    let slack = receiver.to(SLACK_PATH);
    assert_eq!(slack.len(), 1, "{:#?}", receiver.requests());
    let body = &slack[0].body;
    assert_eq!(
        body["text"],
        format!("⏸️ notified in dev waits for approval at `approve` (run {id})").as_str()
    );
    let waiting = body["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(
        waiting.starts_with("*Waiting for approval:* `approve`\n"),
        "{waiting}"
    );
    assert!(
        waiting.contains(&format!("capstan approve {id}")),
        "{waiting}"
    );
    let context = body["blocks"][4]["elements"][0]["text"].as_str().unwrap();
    assert!(
        context.contains(&format!("`capstan approve {id}` · `capstan resume {id}`")),
        "{context}"
    );
    assert_eq!(receiver.to(TEAMS_PATH).len(), 1);

    let approved = sb.capstan(&["approve", &id, "--as", "bob", "--digest", "3f1c9a0b2d4e"]);
    assert_eq!(approved.code, 0, "{approved:?}");
    let resumed = capstan(&sb, &receiver, &["resume", &id, "-q"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");

    // The `always` notifier ran again and told the end; the `failure` one
    // was skipped, so Teams heard nothing more.
    let slack = receiver.to(SLACK_PATH);
    assert_eq!(slack.len(), 2, "{:#?}", receiver.requests());
    assert_eq!(
        slack[1].body["text"],
        format!("✅ notified succeeded in dev (run {id})").as_str()
    );
    assert_eq!(
        receiver.to(TEAMS_PATH).len(),
        1,
        "{:#?}",
        receiver.requests()
    );
    let shown = sb.show(&id);
    assert_eq!(shown["run"]["status"], "succeeded");
    let stage = |name: &str| {
        shown["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(stage("slack")["attempt"], 2);
    assert_eq!(stage("teams")["status"], "skipped");
    assert_eq!(stage("deploy")["status"], "succeeded");
}

/// A webhook URL kept as a secret: the plugin posts to `secret:<name>`,
/// the host to the URL the secret holds; nothing shows it, the audit log
/// names the secret; a secret not granted to the stage is refused.
#[test]
fn the_webhook_url_can_be_a_secret_the_plugin_never_sees() {
    let sb = Sandbox::new();
    let receiver = Receiver::start();
    let grant = format!("127.0.0.1:{}", receiver.port);
    let stage = |name: &str, secret: &str| {
        format!(
            r#"
[stages.{name}]
plugin = "notify"
needs = ["build"]
with = {{ format = "slack", url_secret = "{secret}", status = "${{run.status}}", stages = "${{run.stages}}" }}
[stages.{name}.grants]
connect = ["{grant}"]
[stages.{name}.grants.secrets]
hook = {{ env = "UNUSED_HOOK", programs = [] }}
"#
        )
    };
    let declared = "\n[secrets.hook]\nenv = \"HOOK_URL\"\n";
    let pipeline = sb.pipeline(&format!(
        "{HEAD}{declared}{}{}",
        command("build", "true", &[]),
        stage("tell", "hook"),
    ));
    let url = format!("http://127.0.0.1:{}{SLACK_PATH}", receiver.port);
    let ran: Ran = sb
        .command(&["run", pipeline.to_str().unwrap(), "-q"])
        .env("HOOK_URL", &url)
        .output()
        .unwrap()
        .into();
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        receiver.to(SLACK_PATH).len(),
        1,
        "{:?}",
        receiver.requests()
    );
    let run = sb.last_run();
    assert_tokens_kept_out(&run);
    assert!(!ran.stderr.contains("slack-secret-token"), "{ran:?}");
    let post = run
        .audit_of("tell")
        .into_iter()
        .find(|e| e["capability"] == "connect")
        .cloned()
        .unwrap_or_else(|| panic!("{:#?}", run.audit));
    assert_eq!(post["detail"]["url_secret"], "hook", "{post:#}");

    // A secret the stage is not granted: refused, naming it.
    let pipeline = sb.pipeline(&format!(
        "{HEAD}{declared}\n[secrets.other]\nenv = \"HOOK_URL\"\n{}{}",
        command("build", "true", &[]),
        stage("tell", "other"),
    ));
    let ran: Ran = sb
        .command(&["run", pipeline.to_str().unwrap(), "-q"])
        .env("HOOK_URL", &url)
        .output()
        .unwrap()
        .into();
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        sb.last_run()
            .reason("tell")
            .contains("secret `other` is not granted to this stage"),
        "{}",
        sb.last_run().reason("tell")
    );
    assert_eq!(receiver.to(SLACK_PATH).len(), 1, "nothing more was posted");
}
