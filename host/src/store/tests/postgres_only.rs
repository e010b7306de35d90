//! What only the PostgreSQL store has: a server that may be down or
//! restart, a URL with a password, a schema migrated by whoever opens a new
//! database first, and a client that must not run on an async thread.

use std::sync::{Arc, Barrier};

use capstan_test_artifacts::postgres::{self as pg, Cluster};

use super::*;

/// Rows of `sql` run on `url` (on a thread of its own: the client runs a
/// runtime of its own).
pub(super) fn query(url: &str, sql: &str) -> Vec<::postgres::Row> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        client.query(&sql, &[]).unwrap()
    })
    .join()
    .unwrap()
}

/// The error opening `url` gives, as printed.
pub(super) fn open_error(url: &str) -> String {
    match PostgresStore::open(url) {
        Ok(_) => panic!("{url} opened"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn processes_migrating_a_new_database_at_once_apply_each_version_once() {
    let url = pg::database();
    let ready = Arc::new(Barrier::new(6));
    let openers: Vec<_> = (0..6)
        .map(|_| {
            let (url, ready) = (url.clone(), ready.clone());
            std::thread::spawn(move || {
                ready.wait();
                PostgresStore::open(&url).map(drop)
            })
        })
        .collect();
    for opener in openers {
        opener
            .join()
            .unwrap()
            .expect("every opener sees a migrated schema");
    }
    let applied = query(
        &url,
        "SELECT version FROM capstan_schema_version ORDER BY version",
    );
    let versions: Vec<i32> = applied.iter().map(|r| r.get(0)).collect();
    let expected: Vec<i32> = (1..=crate::store::postgres::latest_schema()).collect();
    assert_eq!(versions, expected);
    // And the store works.
    let s = PostgresStore::open(&url).unwrap();
    s.create_run(&new_run("r", "dev"), &Owner::current())
        .unwrap();
    assert_eq!(s.run("r").unwrap().environment, "dev");
}

#[test]
fn a_database_from_a_newer_capstan_is_refused() {
    let url = pg::database();
    drop(PostgresStore::open(&url).unwrap());
    PostgresStore::open(&url).expect("reopening migrates nothing");
    query(
        &url,
        "INSERT INTO capstan_schema_version (version) VALUES (99)",
    );
    let err = open_error(&url);
    assert!(
        err.starts_with("run store postgres://capstan:***@127.0.0.1:")
            && err.contains("schema is version 99, newer than this Capstan knows"),
        "{err}"
    );
    assert!(!err.contains(pg::shared().password()), "{err}");
}

#[test]
fn a_server_that_is_down_is_named_with_what_to_check_and_no_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = open_error(&format!(
        "postgres://capstan:hunter2pw@127.0.0.1:{port}/capstan"
    ));
    let shown = format!("postgres://capstan:***@127.0.0.1:{port}/capstan");
    assert!(
        err.starts_with(&format!("cannot connect to the run store {shown}: "))
            && err.contains("is the server running"),
        "{err}"
    );
    assert!(!err.contains("hunter2pw"), "{err}");
}

#[test]
fn a_wrong_password_is_refused_without_being_shown() {
    let cluster = pg::shared();
    let right = cluster.database();
    for url in [
        right.replace(cluster.password(), "wr0ngpw"),
        format!(
            "{}?password=wr0ngpw",
            right.replace(&format!(":{}@", cluster.password()), "@")
        ),
    ] {
        let err = open_error(&url);
        assert!(
            err.contains("cannot connect to the run store")
                && err.contains("password authentication failed"),
            "{err}"
        );
        assert!(!err.contains("wr0ngpw") && err.contains("***"), "{err}");
    }
}

#[test]
fn the_store_reconnects_after_the_server_restarts_and_says_when_it_is_down() {
    let cluster = Cluster::start();
    let url = cluster.database();
    let s = PostgresStore::open(&url).unwrap();
    s.create_run(&new_run("r1", "dev"), &Owner::current())
        .unwrap();
    cluster.restart();
    assert_eq!(s.run("r1").unwrap().id, "r1", "a read after the restart");
    cluster.restart();
    s.create_run(&new_run("r2", "dev"), &Owner::current())
        .expect("a write after the restart");

    cluster.stop();
    let err = s.run("r1").unwrap_err().to_string();
    assert!(
        err.starts_with("cannot connect to the run store postgres://capstan:***@127.0.0.1:")
            && err.contains("is the server running"),
        "{err}"
    );
    assert!(!err.contains(cluster.password()), "{err}");
    cluster.restart();
    assert_eq!(s.runs(&RunFilter::default()).unwrap().len(), 2);
}

/// The host calls the store from its async code, and drops it there.
fn use_and_drop_in_async_code() {
    let s = postgres();
    s.create_run(&new_run("r", "dev"), &Owner::current())
        .unwrap();
    assert!(matches!(
        s.try_lock("dev", "r", &Owner::current()).unwrap(),
        Lock::Acquired { .. }
    ));
    assert_eq!(s.run("r").unwrap().status, RunState::Running);
    drop(s);
}

#[tokio::test(flavor = "multi_thread")]
async fn works_on_a_multi_thread_runtime() {
    use_and_drop_in_async_code();
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() {
    use_and_drop_in_async_code();
}

#[test]
fn nul_characters_in_free_text_are_kept_as_replacement_characters() {
    let s = postgres();
    s.create_run(&new_run("r", "dev"), &Owner::current())
        .unwrap();
    let row = StageRow {
        message: "bad\0byte".into(),
        ..ended("build", StageState::Failed)
    };
    s.end_stage("r", None, &row).unwrap();
    assert_eq!(s.stages("r").unwrap()[0].message, "bad\u{FFFD}byte");
}

/// As the README says: once the tables exist, a role that may only read
/// and write them runs Capstan (opening creates nothing when the schema is
/// current).
#[test]
fn a_role_that_may_only_read_and_write_the_tables_uses_a_migrated_store() {
    let cluster = pg::shared();
    let owner_url = cluster.database();
    drop(PostgresStore::open(&owner_url).unwrap());
    let database = owner_url.rsplit('/').next().unwrap().to_string();
    let role = format!("rw_{database}");
    cluster.admin(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{}'",
        cluster.password()
    ));
    query(
        &owner_url,
        &format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
    );
    let s = PostgresStore::open(&cluster.url(&role, cluster.password(), &database))
        .expect("opens without creating anything");
    let me = Owner::current();
    s.create_run(&new_run("r", "prod"), &me).unwrap();
    assert!(matches!(
        s.try_lock("prod", "r", &me).unwrap(),
        Lock::Acquired { .. }
    ));
    s.record_request("r", &pending_request()).unwrap();
    s.audit(
        "r",
        &AuditRow {
            time: "t".into(),
            stage: "apply".into(),
            plugin: "x".into(),
            capability: AuditKind::ExecStarted,
            allowed: true,
            detail: json!({}),
            reason: None,
        },
        "h",
    )
    .unwrap();
    s.finish_run("r", RunState::Succeeded, "t", Some(true))
        .unwrap();
    assert_eq!(s.run("r").unwrap().status, RunState::Succeeded);
    assert_eq!(s.approval_requests("r").unwrap().len(), 1);

    // It could not have created them.
    let fresh = cluster.database();
    let err = open_error(&fresh.replace("capstan:", &format!("{role}:")));
    assert!(
        err.contains("cannot migrate the schema") && err.contains("permission denied"),
        "{err}"
    );
}

fn pending_request() -> PendingApproval {
    PendingApproval {
        stage: "approve".into(),
        digest: "sha".into(),
        subject: "apply".into(),
        details: String::new(),
        checklist: vec![],
        approvers: vec![],
        required: 1,
        asked: "t".into(),
        image_digest: None,
    }
}
