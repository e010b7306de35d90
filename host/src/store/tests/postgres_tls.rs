//! The PostgreSQL store over TLS: on the test server that takes TLS
//! ([`pg::shared_tls`], a certificate for `localhost` and `127.0.0.1` from
//! a CA made for it), and what TLS asks of a server without it.

use capstan_test_artifacts::postgres::{self as pg, Certs, Cluster};

use super::postgres_only::{open_error, query};
use super::*;

fn tls_cluster() -> (&'static Cluster, &'static Certs) {
    let cluster = pg::shared_tls();
    (
        cluster,
        cluster.certs().expect("a TLS cluster has certificates"),
    )
}

/// A new database of [`pg::ROLE`] on `cluster`, and a URL to it by `host`
/// with `params`.
fn database(cluster: &Cluster, host: &str, params: &str) -> (String, String) {
    let name = cluster.new_database(pg::ROLE);
    let url = format!(
        "postgres://{}:{}@{host}:{}/{name}?{params}",
        pg::ROLE,
        cluster.password(),
        cluster.port()
    );
    (url, name)
}

/// Whether each of the store's connections to `database` is encrypted, as
/// the server sees them.
fn encrypted(cluster: &Cluster, database: &str) -> Vec<bool> {
    query(
        &cluster.url("postgres", cluster.password(), "postgres"),
        &format!(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
             WHERE a.datname = '{database}' AND a.application_name = 'capstan'"
        ),
    )
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A store at `url` that records a run and reads it back.
fn working(url: &str) -> PostgresStore {
    let s = PostgresStore::open(url).unwrap_or_else(|e| panic!("{e}"));
    s.create_run(&new_run("r1", "dev"), &Owner::current())
        .unwrap();
    assert_eq!(s.run("r1").unwrap().environment, "dev");
    s
}

/// The error opening `url` gives, which names the store without the
/// password of `cluster`.
fn tls_error(cluster: &Cluster, url: &str) -> String {
    let err = open_error(url);
    assert!(
        !err.contains(cluster.password()) && err.contains(&format!("{}:***@", pg::ROLE)),
        "{err}"
    );
    err
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[test]
fn verify_full_with_the_servers_ca_connects_encrypted_by_address_and_by_name() {
    let (cluster, certs) = tls_cluster();
    for host in ["127.0.0.1", "localhost"] {
        let (url, name) = database(
            cluster,
            host,
            &format!("sslmode=verify-full&sslrootcert={}", path(&certs.ca)),
        );
        let _store = working(&url);
        assert_eq!(encrypted(cluster, &name), [true], "{host}");
    }
}

#[test]
fn a_server_whose_certificate_another_ca_signed_is_not_trusted() {
    let (cluster, certs) = tls_cluster();
    for mode in ["verify-full", "verify-ca", "require"] {
        let (url, _) = database(
            cluster,
            "localhost",
            &format!("sslmode={mode}&sslrootcert={}", path(&certs.other_ca)),
        );
        let err = tls_error(cluster, &url);
        assert!(
            err.starts_with("cannot connect to the run store postgres://capstan:***@localhost:")
                && err.contains(": the server's certificate is not trusted")
                && err.contains(&format!(
                    "it is not signed by a CA in sslrootcert {}",
                    path(&certs.other_ca)
                ))
                && err.contains("give the CA certificate that signed the server's"),
            "{mode}: {err}"
        );
    }
}

#[test]
fn verify_full_refuses_a_name_the_certificate_is_not_for_and_verify_ca_does_not_check_it() {
    let (cluster, certs) = tls_cluster();
    // The name is the URL's host, the address `hostaddr`: the server's.
    let params = |mode: &str| {
        format!(
            "hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
            path(&certs.ca)
        )
    };
    let (url, _) = database(cluster, "db.invalid", &params("verify-full"));
    let err = tls_error(cluster, &url);
    assert!(
        err.contains("the server's certificate is not for `db.invalid`")
            && err.contains("localhost")
            && err.contains("connect by a name the certificate is for"),
        "{err}"
    );
    let (url, name) = database(cluster, "db.invalid", &params("verify-ca"));
    let _store = working(&url);
    assert_eq!(encrypted(cluster, &name), [true]);
}

#[test]
fn without_sslrootcert_only_the_mozilla_roots_are_trusted() {
    let (cluster, _) = tls_cluster();
    let (url, _) = database(cluster, "localhost", "sslmode=verify-full");
    let err = tls_error(cluster, &url);
    assert!(
        err.contains("not trusted: it is not signed by any of the Mozilla root CAs")
            && err.contains("?sslrootcert=/path/to/ca.pem"),
        "{err}"
    );
}

#[test]
fn require_and_prefer_encrypt_without_a_ca_and_disable_does_not() {
    let (cluster, _) = tls_cluster();
    for (params, tls) in [
        ("sslmode=require", true),
        ("sslmode=prefer", true),
        // prefer, the default.
        ("connect_timeout=30", true),
        ("sslmode=disable", false),
    ] {
        let (url, name) = database(cluster, "localhost", params);
        let _store = working(&url);
        assert_eq!(encrypted(cluster, &name), [tls], "{params}");
    }
}

#[test]
fn tls_asked_of_a_server_without_it_is_refused_and_prefer_connects_in_the_clear() {
    let cluster = pg::shared();
    let url = cluster.database();
    for mode in ["require", "verify-full"] {
        let err = tls_error(cluster, &format!("{url}?sslmode={mode}"));
        assert!(
            err.contains(&format!(
                ": the server does not support TLS (sslmode={mode})"
            )) && err.contains("`ssl = on`"),
            "{err}"
        );
    }
    let _store = working(&format!("{url}?sslmode=prefer"));
}

#[test]
fn a_client_certificate_logs_in_where_the_server_asks_for_one() {
    let (cluster, certs) = tls_cluster();
    let name = cluster.new_database(pg::CERT_ROLE);
    let url = format!(
        "postgres://{}@localhost:{}/{name}?sslmode=verify-full&sslrootcert={}",
        pg::CERT_ROLE,
        cluster.port(),
        path(&certs.ca)
    );
    let _store = working(&format!(
        "{url}&sslcert={}&sslkey={}",
        path(&certs.client_cert),
        path(&certs.client_key)
    ));
    // Without it, the server's rule (`cert` in pg_hba.conf) refuses; and
    // in the clear, it has no rule for this role.
    let err = open_error(&url);
    assert!(
        err.contains(": the server asks for a client certificate (")
            && err.contains("give one and its key: sslcert="),
        "{err}"
    );
    let err = open_error(&url.replace("sslmode=verify-full", "sslmode=disable"));
    assert!(
        err.contains(": the server takes this connection only with TLS (pg_hba.conf rejects")
            && err.contains("connect with TLS: sslmode=verify-full"),
        "{err}"
    );
}
