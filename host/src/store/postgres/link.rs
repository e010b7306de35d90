//! The store's one connection to the server, and the transactions run on
//! it. The synchronous client drives a Tokio runtime of its own, which
//! panics on a thread of another runtime (the host's async code calls the
//! store), also when the client is dropped: every use of it happens on a
//! short-lived thread of its own, which borrows the caller's arguments and
//! ends before the call returns.
//!
//! A connection the server closed since its last use (a restart, an idle
//! timeout) is found when a transaction cannot begin; nothing was done
//! then, so the link connects once more and begins again. A failure after
//! that is the caller's: retrying half a transaction could do it twice.

use std::sync::{Mutex, PoisonError};

use ::postgres::config::{Config, Host};
use ::postgres::{Client, NoTls, Transaction};

use super::tls::Tls;
use super::{Fail, LOCK_CLASS, PgError, WRITE_LOCK, migrate};
use crate::store::{Result, StoreError};

pub(super) struct Link {
    /// The URL as shown (its password redacted).
    url: String,
    config: Config,
    tls: Tls,
    client: Mutex<Option<Client>>,
}

impl Link {
    /// Connect, and migrate the schema.
    pub(super) fn open(config: Config, tls: Tls, url: String) -> Result<Link> {
        let link = Link {
            url,
            config,
            tls,
            client: Mutex::new(None),
        };
        link.on_own_thread(|| {
            let mut client = link.connect()?;
            migrate::to_latest(&mut client).map_err(|e| link.error(e))?;
            *link.slot() = Some(client);
            Ok(())
        })?;
        Ok(link)
    }

    /// Run `f` in a read-only transaction.
    pub(super) fn read<T: Send>(
        &self,
        f: impl FnOnce(&mut Transaction) -> std::result::Result<T, Fail> + Send,
    ) -> Result<T> {
        self.transact(false, f)
    }

    /// Run `f` in a transaction that holds the write lock (writes run one at
    /// a time, as in SQLite).
    pub(super) fn write<T: Send>(
        &self,
        f: impl FnOnce(&mut Transaction) -> std::result::Result<T, Fail> + Send,
    ) -> Result<T> {
        self.transact(true, |tx| {
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_CLASS, &WRITE_LOCK],
            )?;
            f(tx)
        })
    }

    fn transact<T: Send>(
        &self,
        write: bool,
        f: impl FnOnce(&mut Transaction) -> std::result::Result<T, Fail> + Send,
    ) -> Result<T> {
        self.on_own_thread(|| {
            let mut slot = self.slot();
            let fresh = match slot.as_ref() {
                Some(client) if !client.is_closed() => false,
                _ => {
                    *slot = Some(self.connect()?);
                    true
                }
            };
            match begin(slot.as_mut().expect("connected"), write) {
                Ok(tx) => return run(tx, f).map_err(|fail| self.failure(fail)),
                Err(e) if fresh => return Err(self.error(PgError::Connect(e))),
                // The server closed the connection since its last use.
                Err(_) => {}
            };
            *slot = Some(self.connect()?);
            let tx = begin(slot.as_mut().expect("connected"), write)
                .map_err(|e| self.error(PgError::Connect(e)))?;
            run(tx, f).map_err(|fail| self.failure(fail))
        })
    }

    fn connect(&self) -> Result<Client> {
        let connected = match self.tls.connector() {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        connected.map_err(|e| self.error(self.tls.explain(e, &self.host())))
    }

    /// The server's name as the URL gives it (the first, if several), as
    /// its certificate must have it.
    fn host(&self) -> String {
        match self.config.get_hosts().first() {
            Some(Host::Tcp(name)) => name.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => String::new(),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Client>> {
        // A panic in another call leaves no half-used client: its
        // transaction was rolled back when it was dropped.
        self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, source: PgError) -> StoreError {
        StoreError::Postgres {
            url: self.url.clone(),
            source,
        }
    }

    fn failure(&self, fail: Fail) -> StoreError {
        match fail {
            // The connection went away in the middle: say so, as when it
            // cannot be made.
            Fail::Db(e) if e.is_closed() => self.error(PgError::Connect(e)),
            Fail::Db(e) => self.error(PgError::Query(e)),
            Fail::Pg(e) => self.error(e),
            Fail::Store(e) => e,
        }
    }

    /// Run `f` on a thread outside any async runtime, and wait for it.
    fn on_own_thread<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("capstan-store".into())
                .spawn_scoped(scope, f)
                .map_err(|e| self.error(PgError::Thread(e)))?;
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Closing the client runs its runtime too: not on the caller's
        // thread, which may be an async one.
        if let Some(client) = self.slot().take() {
            std::thread::scope(|scope| {
                let _ = std::thread::Builder::new().spawn_scoped(scope, move || drop(client));
            });
        }
    }
}

fn begin(
    client: &mut Client,
    write: bool,
) -> std::result::Result<Transaction<'_>, ::postgres::Error> {
    client.build_transaction().read_only(!write).start()
}

fn run<T>(
    mut tx: Transaction,
    f: impl FnOnce(&mut Transaction) -> std::result::Result<T, Fail>,
) -> std::result::Result<T, Fail> {
    let value = f(&mut tx)?;
    tx.commit()?;
    Ok(value)
}
