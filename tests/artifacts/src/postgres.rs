//! A throw-away PostgreSQL cluster for tests: Debian's server binaries
//! (`/usr/lib/postgresql/<version>/bin`, installed by `.ci/setup`), a new
//! cluster in a temporary directory, listening on 127.0.0.1 only on a free
//! port, with durability off (`fsync=off`) since it never outlives the tests.
//!
//! ```no_run
//! // A fresh, empty database per test, so tests run in parallel.
//! let url = capstan_test_artifacts::postgres::database();
//! assert!(url.starts_with("postgres://capstan:"));
//! ```
//!
//! The cluster [`shared`] by a test process starts on first use and stops
//! when the process exits, also when it dies: the server is started with
//! `PR_SET_PDEATHSIG` from a thread that lives as long as the cluster (the
//! signal follows the thread that forked, not the process), and so is a
//! small shell that then removes the cluster's directory (a later test
//! process removes any that are left).
//!
//! Tests connect as `capstan`, a role with no privilege but owning its
//! database (what the README asks of a team's server); both it and the
//! superuser `postgres` need a password over TCP (scram-sha-256), so every
//! URL carries one. The cluster's default collation is ICU `en-US`, not
//! byte order, as on many servers.
//!
//! A cluster [`Cluster::start_tls`] starts (or the one [`shared_tls`])
//! also takes TLS connections (`ssl=on`), with a certificate for
//! `localhost` and `127.0.0.1` from a CA made for it ([`Certs`], by the
//! `openssl` command, which Debian's `postgresql` depends on); plain
//! connections still work there. [`CERT_ROLE`] logs in to it with a client
//! certificate instead of a password.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// What the thread that starts a server runs.
type Job = Box<dyn FnOnce() + Send>;

/// The role tests connect as (owner of each test database, nothing more).
pub const ROLE: &str = "capstan";

/// How long a server may take to accept connections before the fixture
/// gives up (and shows its log): a bound for a broken setup, not a timing
/// assertion.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);

/// The role that logs in to a TLS cluster with a client certificate
/// ([`Certs::client_cert`]) and no password, over TLS only.
pub const CERT_ROLE: &str = "capstan_cert";

/// A fresh database on the [`shared`] cluster: its URL, as [`ROLE`], with
/// the password in it.
pub fn database() -> String {
    shared().database()
}

/// The cluster of this test process, started on first use.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    extern "C" fn stop_shared() {
        if let Some(cluster) = SHARED.get() {
            cluster.remove();
        }
    }
    SHARED.get_or_init(|| started_for_the_process(Cluster::start, stop_shared))
}

/// The TLS cluster of this test process ([`Cluster::start_tls`]), started
/// on first use.
pub fn shared_tls() -> &'static Cluster {
    static SHARED_TLS: OnceLock<Cluster> = OnceLock::new();
    extern "C" fn stop_shared_tls() {
        if let Some(cluster) = SHARED_TLS.get() {
            cluster.remove();
        }
    }
    SHARED_TLS.get_or_init(|| started_for_the_process(Cluster::start_tls, stop_shared_tls))
}

/// A cluster `start` starts, removed by `stop` when the process exits.
fn started_for_the_process(start: fn() -> Cluster, stop: extern "C" fn()) -> Cluster {
    let cluster = start();
    // SAFETY: registers a plain function, run once at exit.
    unsafe { libc::atexit(stop) };
    cluster
}

/// The certificates of a TLS cluster, made for it (PEM files, EC P-256
/// keys, valid for two days).
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// Another CA, which signed nothing the cluster has.
    pub other_ca: PathBuf,
    /// The server's certificate: for `localhost` and `127.0.0.1`.
    pub server_cert: PathBuf,
    /// [`CERT_ROLE`]'s certificate (signed by [`Certs::ca`]).
    pub client_cert: PathBuf,
    /// Its key, readable by this process only (0600).
    pub client_key: PathBuf,
}

/// A PostgreSQL cluster of its own (a test that restarts or stops its
/// server needs one: others share [`shared`]). Dropping it stops the server
/// and removes its directory.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    password: String,
    /// The user the server runs as (`postgres` when the tests run as root:
    /// PostgreSQL refuses to run as root).
    account: Option<(u32, u32)>,
    server: Mutex<Option<Child>>,
    cleaner: Mutex<Option<Child>>,
    /// Runs the closures that start the server, on the thread that lives as
    /// long as the cluster (see the module's doc).
    spawner: Mutex<Option<mpsc::Sender<Job>>>,
    databases: AtomicU32,
    /// A TLS cluster's certificates.
    certs: Option<Certs>,
}

impl Cluster {
    /// A new cluster, running.
    pub fn start() -> Cluster {
        Cluster::start_with(false)
    }

    /// A new cluster, running, that takes TLS connections too: `ssl=on`
    /// with [`Certs`] made for it; [`CERT_ROLE`] may log in with its client
    /// certificate, over TLS only.
    pub fn start_tls() -> Cluster {
        Cluster::start_with(true)
    }

    fn start_with(tls: bool) -> Cluster {
        let bin = binaries();
        sweep_leftovers();
        let account = server_account();
        let dir = temp_dir();
        let password = random_hex(16);
        let cluster = Cluster {
            dir,
            bin,
            port: 0,
            password,
            account,
            server: Mutex::new(None),
            cleaner: Mutex::new(None),
            spawner: Mutex::new(Some(spawner())),
            databases: AtomicU32::new(0),
            certs: None,
        };
        cluster.start_cleaner();
        cluster.init();
        let mut cluster = cluster;
        if tls {
            cluster.certs = Some(cluster.make_certs());
            cluster.allow_cert_role();
        }
        for attempt in 1.. {
            cluster.port = free_port();
            match cluster.run_server() {
                Ok(()) => break,
                // Another process took the port between our look and the
                // server's bind: another port.
                Err(log) if attempt < 5 && log.contains("could not") => continue,
                Err(log) => panic!("the test PostgreSQL server did not start:\n{log}"),
            }
        }
        cluster.admin(&format!(
            "CREATE ROLE {ROLE} LOGIN PASSWORD '{}'",
            cluster.password
        ));
        if tls {
            cluster.admin(&format!("CREATE ROLE {CERT_ROLE} LOGIN"));
        }
        cluster
    }

    /// A new empty database owned by [`ROLE`]: its URL.
    pub fn database(&self) -> String {
        let name = self.new_database(ROLE);
        self.url(ROLE, &self.password, &name)
    }

    /// A new empty database owned by `owner`: its name.
    pub fn new_database(&self, owner: &str) -> String {
        let name = format!("t_{}", self.databases.fetch_add(1, Ordering::SeqCst));
        self.admin(&format!("CREATE DATABASE {name} OWNER {owner}"));
        name
    }

    /// A TLS cluster's certificates ([`Cluster::start_tls`]); `None` for a
    /// cluster without TLS.
    pub fn certs(&self) -> Option<&Certs> {
        self.certs.as_ref()
    }

    /// `postgres://user:password@127.0.0.1:<port>/database`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The password of [`ROLE`] and of the superuser `postgres`.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Run SQL as the superuser (`postgres`), in the `postgres` database.
    pub fn admin(&self, sql: &str) {
        let url = self.url("postgres", &self.password, "postgres");
        let statement = sql.to_string();
        // The sync client runs a runtime of its own: never on a test's
        // async runtime thread.
        std::thread::spawn(move || {
            let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls)?;
            client.batch_execute(&statement)
        })
        .join()
        .expect("admin thread")
        .unwrap_or_else(|e| panic!("test PostgreSQL: {sql}: {e}"));
    }

    /// Stop the server (fast shutdown: sessions end, nothing is waited
    /// for), keeping its data.
    pub fn stop(&self) {
        let Some(mut server) = self.server.lock().unwrap().take() else {
            return;
        };
        // SAFETY: a signal to the server we started (still our child).
        unsafe { libc::kill(server.id() as i32, libc::SIGINT) };
        let _ = server.wait();
    }

    /// Stop the server and start it again on the same port.
    pub fn restart(&self) {
        self.stop();
        if let Err(log) = self.run_server() {
            panic!("the test PostgreSQL server did not start again:\n{log}");
        }
    }

    /// Stop the server and remove the cluster's directory.
    fn remove(&self) {
        self.stop();
        if let Some(mut cleaner) = self.cleaner.lock().unwrap().take() {
            // SAFETY: a signal to the shell we started (still our child).
            unsafe { libc::kill(cleaner.id() as i32, libc::SIGTERM) };
            let _ = cleaner.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn init(&self) {
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, &self.password).unwrap();
        self.chown(&pwfile);
        let out = self
            .as_server(Command::new(self.bin.join("initdb")))
            .args(["-D", "data", "-U", "postgres", "--pwfile", "pwfile"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .args(["--encoding=UTF8", "--locale=C.UTF-8"])
            .args(["--locale-provider=icu", "--icu-locale=en-US"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .expect("initdb runs");
        let _ = std::fs::remove_file(&pwfile);
        assert!(
            out.status.success(),
            "initdb failed in {}:\n{}{}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start the server and wait until it accepts connections; `Err` with
    /// its log if it exits first.
    fn run_server(&self) -> Result<(), String> {
        let log = self.dir.join("server.log");
        let log_file = std::fs::File::create(&log).unwrap();
        self.chown(&log);
        let mut cmd = self.as_server(Command::new(self.bin.join("postgres")));
        cmd.args(["-D", "data", "-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .args(self.tls_settings())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        // SIGINT: a fast shutdown (sessions end, nothing is waited for).
        let child = self.spawn_bound(cmd, libc::SIGINT).expect("postgres runs");
        *self.server.lock().unwrap() = Some(child);

        let url = self.url("postgres", &self.password, "postgres");
        let since = Instant::now();
        loop {
            let probe = url.clone();
            let ready = std::thread::spawn(move || {
                ::postgres::Client::connect(&probe, ::postgres::NoTls)
                    .and_then(|mut c| c.batch_execute("SELECT 1"))
            })
            .join()
            .expect("probe thread");
            if ready.is_ok() {
                return Ok(());
            }
            let exited = {
                let mut server = self.server.lock().unwrap();
                match server.as_mut().map(Child::try_wait) {
                    Some(Ok(Some(_))) => {
                        server.take();
                        true
                    }
                    _ => false,
                }
            };
            let text = || std::fs::read_to_string(&log).unwrap_or_default();
            if exited {
                return Err(text());
            }
            if since.elapsed() > STARTUP_LIMIT {
                self.stop();
                return Err(format!(
                    "no connection after {STARTUP_LIMIT:?} ({ready:?}):\n{}",
                    text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's settings for TLS, if it has certificates.
    fn tls_settings(&self) -> Vec<String> {
        let Some(certs) = &self.certs else {
            return Vec::new();
        };
        let tls = self.dir.join("tls");
        [
            "ssl=on".to_string(),
            format!("ssl_cert_file={}", certs.server_cert.display()),
            format!("ssl_key_file={}", tls.join("server.key").display()),
            // The CA client certificates must come from.
            format!("ssl_ca_file={}", certs.ca.display()),
        ]
        .into_iter()
        .flat_map(|setting| ["-c".to_string(), setting])
        .collect()
    }

    /// Make the CAs and the server's and client's certificates, in
    /// `<dir>/tls`, with `openssl`. The server's key belongs to the
    /// server's account, mode 0600, as PostgreSQL requires.
    fn make_certs(&self) -> Certs {
        let tls = self.dir.join("tls");
        std::fs::create_dir(&tls).unwrap();
        self.chown(&tls);
        let path = |name: &str| tls.join(name);
        openssl_cert(&path("ca"), "Capstan test CA", None, CA_EXTENSIONS);
        openssl_cert(&path("other-ca"), "Another test CA", None, CA_EXTENSIONS);
        openssl_cert(
            &path("server"),
            "localhost",
            Some(&path("ca")),
            &[
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature",
                "extendedKeyUsage=serverAuth",
            ],
        );
        openssl_cert(
            &path("client"),
            CERT_ROLE,
            Some(&path("ca")),
            &[
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature",
                "extendedKeyUsage=clientAuth",
            ],
        );
        let server_key = path("server.key");
        std::fs::set_permissions(&server_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        self.chown(&server_key);
        std::fs::set_permissions(path("client.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        Certs {
            ca: path("ca.pem"),
            other_ca: path("other-ca.pem"),
            server_cert: path("server.pem"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
        }
    }

    /// Let [`CERT_ROLE`] log in over TLS with its client certificate (the
    /// `cert` method: the certificate's CN is the role), and never in the
    /// clear: rules before any other of `pg_hba.conf`.
    fn allow_cert_role(&self) {
        let hba = self.dir.join("data/pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!(
                "hostssl all {CERT_ROLE} 127.0.0.1/32 cert\n\
                 hostnossl all {CERT_ROLE} 127.0.0.1/32 reject\n{rules}"
            ),
        )
        .unwrap();
    }

    /// Start `cmd` from the thread that lives as long as the cluster, to
    /// get `signal` when that thread ends (with the test process).
    fn spawn_bound(&self, mut cmd: Command, signal: i32) -> std::io::Result<Child> {
        // SAFETY: prctl only, between fork and exec. After the uid change
        // (which clears the setting), so it holds.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, rx) = mpsc::channel();
        let spawner = self.spawner.lock().unwrap();
        spawner
            .as_ref()
            .expect("cluster running")
            .send(Box::new(move || {
                let _ = tx.send(cmd.spawn());
            }))
            .expect("spawner thread");
        rx.recv().expect("spawner thread")
    }

    /// A shell that removes the cluster's directory once the test process
    /// is gone (it gets SIGTERM then) and the server has stopped.
    fn start_cleaner(&self) {
        let mut cmd = self.as_server(Command::new("sh"));
        cmd.arg("-c")
            .arg(CLEANER)
            .arg("capstan-pg-cleaner")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = self.spawn_bound(cmd, libc::SIGTERM).expect("sh runs");
        *self.cleaner.lock().unwrap() = Some(child);
    }

    /// `cmd` run in the cluster's directory, as the server's account.
    fn as_server(&self, mut cmd: Command) -> Command {
        cmd.current_dir(&self.dir).env_remove("PGPASSWORD");
        if let Some((uid, gid)) = self.account {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn chown(&self, path: &Path) {
        if let Some((uid, gid)) = self.account {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.remove();
        // The spawner thread ends once the server is gone.
        self.spawner.lock().unwrap().take();
    }
}

/// A CA's extensions, as `openssl req -addext` takes them.
const CA_EXTENSIONS: &[&str] = &[
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign,cRLSign",
];

/// A new EC P-256 key (`<base>.key`) and its certificate (`<base>.pem`)
/// for `name` (the subject's CN) with `extensions`, signed by the CA
/// `<ca>.pem` (key `<ca>.key`), or by itself.
fn openssl_cert(base: &Path, name: &str, ca: Option<&Path>, extensions: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-new", "-newkey", "ec"])
        .args([
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(base.with_extension("key"))
        .arg("-out")
        .arg(base.with_extension("pem"))
        .arg("-subj")
        .arg(format!("/CN={name}"));
    if let Some(ca) = ca {
        cmd.arg("-CA")
            .arg(ca.with_extension("pem"))
            .arg("-CAkey")
            .arg(ca.with_extension("key"));
    }
    for extension in extensions {
        cmd.args(["-addext", extension]);
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run `openssl` ({e}) to make the test PostgreSQL server's certificates: \
             install it (Debian `openssl`; .ci/setup does)"
        ),
    };
    assert!(
        out.status.success(),
        "openssl failed to make {}:\n{}",
        base.with_extension("pem").display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where Debian's server binaries are (the newest version installed).
fn binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries (/usr/lib/postgresql/<version>/bin/initdb): \
             the PostgreSQL tests need them; run .ci/setup (it installs Debian's `postgresql`)"
        ),
    }
}

/// The account the server runs as: `postgres` when we are root.
fn server_account() -> Option<(u32, u32)> {
    // SAFETY: getuid cannot fail; getpwnam's result is read before any
    // other call that could reuse its buffer.
    unsafe {
        if libc::getuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !pw.is_null(),
            "running as root, and there is no `postgres` user to run the test PostgreSQL \
             server as (root may not): run .ci/setup (Debian's `postgresql` creates it)"
        );
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

const DIR_PREFIX: &str = "capstan-pg-";

/// The cleaner's script (`$1`: the cluster's directory): on SIGTERM, wait
/// for the server (if any) to stop, then remove the directory.
const CLEANER: &str = r#"
dir=$1
trap 'kill "$nap" 2>/dev/null
      pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null)
      while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
      rm -rf "$dir"; exit 0' TERM
while :; do sleep 3600 & nap=$!; wait "$nap"; done
"#;

/// A new directory for a cluster, named after this process.
fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        random_hex(4)
    ));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some((uid, gid)) = server_account() {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    }
    dir
}

/// Remove the directories of clusters whose test process died and whose
/// server is gone too, if their cleaner did not (it died as well).
fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let server = std::fs::read_to_string(entry.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
        if !alive(pid) && !server.is_some_and(alive) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The thread that starts a cluster's server and lives as long as it.
fn spawner() -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("test-postgres".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        })
        .expect("spawner thread");
    tx
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
