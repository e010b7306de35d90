//! The command line: one file per subcommand; this file parses and
//! dispatches.

mod approve;
mod audit;
mod cancel;
mod completions;
mod drift;
mod drive;
pub mod locate;
mod logs;
mod man;
mod plugin;
mod resume;
mod rollback;
mod run;
mod runs;
mod schema;
mod show;
pub(crate) mod stats;
mod unlock;
mod validate;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::builder::TypedValueParser as _;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::exit::{self, Failure};
use crate::pipeline::{Diagnostics, Pipeline};
use crate::run::{Prepared, prepare};
use crate::runtime::Runtime;
use crate::runtime::cache::{Cache, UserCache};
use crate::store::{Access, Location, NewRun, PostgresStore, RunKind, RunStore, SqliteStore};

/// Run infrastructure delivery pipelines whose stages are WebAssembly
/// components, each allowed only what its pipeline grants.
#[derive(Debug, Parser)]
#[command(name = "capstan", version, after_long_help = exit::HELP, after_help = "Run `capstan help <command>` for examples; `capstan --help` lists exit codes.")]
pub struct Cli {
    /// Where runs are kept (and compiled plugins, without the per-user cache:
    /// see --cache-dir). Default: `.capstan/` at the root of the git
    /// repository holding the pipeline file (beside the file outside a
    /// repository); for commands given a run id, the nearest `.capstan/`
    /// found looking upwards from the current directory.
    #[arg(
        long = "state-dir",
        global = true,
        env = "CAPSTAN_STATE_DIR",
        value_name = "DIR"
    )]
    pub state_dir_given: Option<PathBuf>,
    /// The state dir in use (resolved from the above before any command).
    #[arg(skip)]
    pub state_dir: PathBuf,
    /// Why this command, which reads recorded runs, has no store to read.
    #[arg(skip)]
    missing_store: Option<String>,
    /// The run store: a SQLite file's path, or a PostgreSQL server's URL
    /// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...]`;
    /// the password may come from $PGPASSWORD instead) to share runs,
    /// approvals and locks across a team. TLS as libpq's sslmode says:
    /// verify-full checks the server's certificate (signed by a CA in
    /// sslrootcert=CA.pem, or by a Mozilla root without it) and its name;
    /// verify-ca the CA only; require encrypts, checking no certificate
    /// unless sslrootcert is given; prefer (the default) is require when
    /// the server offers TLS, else in the clear; disable and allow connect
    /// in the clear. sslcert and sslkey give a client certificate.
    /// Default: <state-dir>/capstan.db.
    #[arg(
        long,
        global = true,
        env = "CAPSTAN_STORE",
        hide_env_values = true,
        value_name = "PATH|URL",
        value_parser = clap::builder::OsStringValueParser::new().map(Location::from)
    )]
    pub store: Option<Location>,
    /// Compile plugins every time: read and write no compiled-plugin cache.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// The compiled-plugin cache shared by every state dir of this user.
    /// Default: $XDG_CACHE_HOME/capstan, else ~/.cache/capstan. `none`:
    /// compiled plugins are kept in each state dir instead. Its entries are
    /// trusted only with a key kept apart, in $XDG_STATE_HOME/capstan (else
    /// ~/.local/state/capstan); a directory that is a symlink, another
    /// user's, or writable by others, or a key that is not a private file,
    /// is not used: a warning says why, and the state dir keeps them.
    #[arg(
        long = "cache-dir",
        global = true,
        env = "CAPSTAN_CACHE_DIR",
        value_name = "DIR|none"
    )]
    pub cache_dir: Option<PathBuf>,
    /// When to colour output: `auto` colours a terminal unless NO_COLOR is
    /// set.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: crate::term::ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Run(run::Args),
    Validate(validate::Args),
    Audit(audit::Args),
    Schema(schema::Args),
    /// Look at a plugin (`describe`), or create a new one (`new`).
    #[command(subcommand)]
    Plugin(plugin::Command),
    Runs(runs::Args),
    Show(show::Args),
    Logs(logs::Args),
    Approve(approve::ApproveArgs),
    Reject(approve::RejectArgs),
    Resume(resume::Args),
    Cancel(cancel::Args),
    Unlock(unlock::Args),
    Rollback(rollback::Args),
    Drift(drift::Args),
    Stats(stats::Args),
    Verify(verify::Args),
    Completions(completions::Args),
    Man(man::Args),
}

impl Command {
    /// What this command's state is found from (see [`locate`]).
    fn anchor(&self) -> locate::Anchor<'_> {
        use locate::Anchor;
        match self {
            Command::Run(a) => Anchor::Pipeline(&a.pipeline),
            Command::Drift(a) => Anchor::Pipeline(&a.pipeline),
            Command::Validate(a) => Anchor::Pipeline(&a.pipeline),
            Command::Audit(a) => match &a.target {
                Some(t) if t.extension().is_some_and(|e| e == "wasm") => Anchor::Cache,
                Some(t) => Anchor::Pipeline(t),
                None => Anchor::Recorded,
            },
            Command::Schema(a) => a
                .pipeline
                .as_deref()
                .map_or(Anchor::Cache, Anchor::Pipeline),
            // These read no state: any place will do.
            Command::Plugin(_) | Command::Completions(_) | Command::Man(_) => Anchor::Cache,
            Command::Rollback(a) => a
                .pipeline
                .as_deref()
                .map_or(Anchor::Recorded, Anchor::Pipeline),
            Command::Runs(_)
            | Command::Show(_)
            | Command::Logs(_)
            | Command::Approve(_)
            | Command::Reject(_)
            | Command::Resume(_)
            | Command::Cancel(_)
            | Command::Unlock(_)
            | Command::Stats(_)
            | Command::Verify(_) => Anchor::Recorded,
        }
    }
}

impl Command {
    /// Whether the command records anything in the run store. Those that
    /// only read recorded runs also work on a read-only state dir and, with
    /// a warning, on a damaged store.
    fn store_access(&self) -> Access {
        match self {
            Command::Runs(_)
            | Command::Show(_)
            | Command::Logs(_)
            | Command::Stats(_)
            | Command::Verify(_)
            | Command::Audit(_) => Access::Read,
            _ => Access::Write,
        }
    }
}

/// Parse the command line, run the command, map the result to an exit code.
pub fn main() -> ExitCode {
    let mut cli = parse();
    crate::term::set_colour(cli.color);
    if let Err(failure) = cli.resolve_paths() {
        eprintln!("{}", failure.message.trim_end());
        return exit::code(failure.code);
    }
    crate::caps::limits::raise_descriptor_limit();
    crate::caps::exec::tree::adopt_orphans();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::code(exit::INTERNAL);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run(args) => run::exec(args, &cli).await,
            Command::Validate(args) => validate::exec(args, &cli).await,
            Command::Audit(args) => audit::exec(args, &cli).await,
            Command::Schema(args) => schema::exec(args, &cli).await,
            Command::Plugin(cmd) => plugin::exec(cmd, &cli).await,
            Command::Runs(args) => runs::exec(args, &cli),
            Command::Show(args) => show::exec(args, &cli),
            Command::Logs(args) => logs::exec(args, &cli).await,
            Command::Approve(args) => approve::approve(args, &cli),
            Command::Reject(args) => approve::reject(args, &cli),
            Command::Resume(args) => resume::exec(args, &cli).await,
            Command::Cancel(args) => cancel::exec(args, &cli).await,
            Command::Unlock(args) => unlock::exec(args, &cli),
            Command::Rollback(args) => rollback::exec(args, &cli).await,
            Command::Drift(args) => drift::exec(args, &cli).await,
            Command::Stats(args) => stats::exec(args, &cli),
            Command::Verify(args) => verify::exec(args, &cli),
            Command::Completions(args) => completions::exec(args),
            Command::Man(args) => man::exec(args),
        }
    });
    // A plugin blocked in a WASI call (opening a FIFO nobody writes) keeps a
    // blocking thread busy forever; its stage has already ended, so do not
    // wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => exit::code(code),
        // Nothing to say: e.g. the reader of stdout went away
        // (`crate::term::output_failure`).
        Err(failure) if failure.message.is_empty() => exit::code(failure.code),
        Err(failure) => {
            // Messages quote plugin text (names, reasons, subjects): escaped,
            // with their own line breaks kept.
            eprintln!("{}", crate::text::block(failure.message.trim_end()));
            exit::code(failure.code)
        }
    }
}

/// [`Cli::parse`], with clap's help and errors coloured as `--color`
/// says: clap reads its colour choice before the arguments that carry it.
fn parse() -> Cli {
    let colour = crate::term::ColorChoice::given(std::env::args_os());
    let mut command = Cli::command().color(colour.into());
    let mut matches = command.get_matches_mut();
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

impl Cli {
    /// Resolve `--state-dir` and `--store` once: absolute, with every symlink
    /// in their existing part resolved. Every later use goes by these paths,
    /// and the overlap rules check these objects, so a symlink re-pointed
    /// later (or a first run through a symlink) cannot move Capstan's state
    /// under a grant.
    fn resolve_paths(&mut self) -> Result<(), Failure> {
        (self.state_dir, self.missing_store) = self.locate_state()?;
        let resolve = |path: &Path, what: &str| {
            crate::caps::fs::resolve_existing(path).map_err(|e| {
                Failure::new(
                    exit::USAGE,
                    format!("error: cannot resolve {what} {}: {e}", path.display()),
                )
            })
        };
        self.state_dir = resolve(&self.state_dir, "the state dir")?;
        if let Some(Location::Sqlite(path)) = &self.store {
            self.store = Some(Location::Sqlite(resolve(path, "--store")?));
        }
        Ok(())
    }

    /// Where this command's state is (see [`locate`]), and for commands
    /// that read recorded runs, why there is no store there: they refuse
    /// (when they open the store, after their own arguments are checked)
    /// rather than create an empty one.
    fn locate_state(&self) -> Result<(PathBuf, Option<String>), Failure> {
        use locate::Anchor;
        let usage = |message: String| Failure::new(exit::USAGE, message);
        let anchor = self.command.anchor();
        let state = match (&self.state_dir_given, &anchor) {
            (Some(given), _) => given.clone(),
            (None, Anchor::Pipeline(file)) => locate::for_pipeline(file)
                .map_err(|e| usage(format!("error: cannot locate {}: {e}", file.display())))?,
            (None, Anchor::Recorded | Anchor::Cache) => {
                let here = std::env::current_dir()
                    .map_err(|e| usage(format!("error: cannot read the current directory: {e}")))?;
                match locate::upwards(&here, self.store.is_some()) {
                    Some(found) => found,
                    None if matches!(anchor, Anchor::Cache) || self.store.is_some() => {
                        here.join(locate::STATE_DIR)
                    }
                    None => {
                        let missing = format!(
                            "error: no Capstan state ({}/capstan.db) in {} or any directory above it.\n  \
                             Runs are recorded beside their pipeline (at its repository's root): run this \
                             inside that repository, or pass --state-dir (or $CAPSTAN_STATE_DIR).",
                            locate::STATE_DIR,
                            here.display()
                        );
                        return Ok((here.join(locate::STATE_DIR), Some(missing)));
                    }
                }
            }
        };
        let store = self
            .store
            .clone()
            .unwrap_or_else(|| Location::Sqlite(state.join("capstan.db")));
        // A server's store is there to read (or says why not when opened).
        let Some(store) = store.path().filter(|_| matches!(anchor, Anchor::Recorded)) else {
            return Ok((state, None));
        };
        if store.is_file() {
            return Ok((state, None));
        }
        let from = if self.store.is_some() {
            "--store or $CAPSTAN_STORE"
        } else {
            "--state-dir or $CAPSTAN_STATE_DIR"
        };
        let missing = format!(
            "error: no run store at {} (from {from}); nothing is recorded there.\n  \
             Give the state dir of the pipeline whose runs you want (its `.capstan/`), or \
             run this inside its repository without --state-dir.",
            store.display()
        );
        Ok((state, Some(missing)))
    }

    /// What no grant may reach: the state dir, the run store (a SQLite
    /// file: a server's store is out of any grant's reach) and the key of
    /// the per-user compiled-plugin cache (whether or not this command uses
    /// it: a stage that read it could forge entries for later runs).
    pub fn protected(&self) -> Result<Vec<crate::caps::fs::Protected>, Failure> {
        use crate::caps::fs::Protected;
        let locate = |path: &Path, what: &str| {
            Protected::locate(path, what).map_err(|e| {
                Failure::new(
                    exit::INTERNAL,
                    format!("error: cannot locate {what} {}: {e}", path.display()),
                )
            })
        };
        let mut protected = vec![locate(
            &self.state_dir,
            "Capstan's state dir (run store, audit logs, compiled plugins, other runs)",
        )?];
        if let Some(path) = self.store_location().path() {
            protected.push(locate(path, "the run store")?);
        }
        if let Some(dir) = UserCache::key_dir(|v| std::env::var_os(v)) {
            let key = dir.join(crate::runtime::cache::user::KEY_NAME);
            let mut key = locate(&key, "Capstan's per-user compiled-plugin cache key")?;
            key.moved_by = Some("with $XDG_STATE_HOME".into());
            protected.push(key);
        }
        Ok(protected)
    }

    /// Where the run store is: `--store`, else `<state-dir>/capstan.db`.
    pub fn store_location(&self) -> Location {
        self.store
            .clone()
            .unwrap_or_else(|| Location::Sqlite(self.state_dir.join("capstan.db")))
    }

    /// Open the run store, and mark runs whose host died as interrupted.
    pub fn store(&self) -> Result<Arc<dyn RunStore>, Failure> {
        let location = self.store_location();
        if let Some(missing) = &self.missing_store
            && location.path().is_some_and(|path| !path.is_file())
        {
            return Err(Failure::new(exit::USAGE, missing.clone()));
        }
        let lease = crate::store::Lease::from_env()
            .map_err(|e| Failure::new(exit::USAGE, format!("error: {e}")))?;
        let fail = |e: crate::store::StoreError| {
            let hint = match &location {
                _ if e.says_how_to_fix() => "",
                Location::Sqlite(_) => {
                    "\n  check the path (--store, $CAPSTAN_STORE) and its permissions"
                }
                Location::Postgres(_) => "\n  the URL is from --store or $CAPSTAN_STORE",
            };
            Failure::new(exit::INTERNAL, format!("error: {e}{hint}"))
        };
        let (store, writable): (Arc<dyn RunStore>, bool) = match &location {
            Location::Sqlite(path) => {
                let store = SqliteStore::open_for(path, self.command.store_access())
                    .map_err(fail)?
                    .with_lease(lease);
                for warning in store.warnings() {
                    eprintln!("warning: {warning}");
                }
                let writable = store.writable();
                (Arc::new(store), writable)
            }
            Location::Postgres(url) => (
                Arc::new(PostgresStore::open(url).map_err(fail)?.with_lease(lease)),
                true,
            ),
        };
        // A store opened only to read is left as it is.
        let dead = match writable {
            true => store
                .reap()
                .map_err(|e| Failure::new(exit::INTERNAL, format!("error: {e}")))?,
            false => Vec::new(),
        };
        for id in dead {
            eprintln!(
                "note: run {id} was interrupted (its host process is gone); `capstan resume {id}` continues it"
            );
        }
        Ok(store)
    }

    pub fn cache(&self) -> Cache {
        if self.no_cache {
            return Cache::disabled();
        }
        let state = self.state_dir.join("cache");
        match UserCache::locate(self.cache_dir.as_deref(), |v| std::env::var_os(v)) {
            Some(user) => Cache::per_user(user, state),
            None => {
                if let Some(dir) = &self.cache_dir
                    && dir.as_os_str() != crate::runtime::cache::user::NONE
                {
                    eprintln!(
                        "warning: not using the compiled-plugin cache {}: neither $XDG_STATE_HOME nor $HOME is set to keep its key in; plugins are cached in the state dir instead",
                        dir.display()
                    );
                }
                Cache::new(state)
            }
        }
    }
}

/// Load and validate a pipeline file (exit code 3 on problems).
pub fn load_pipeline(path: &Path) -> Result<Pipeline, Failure> {
    Pipeline::load(path)
        .map_err(|d| Failure::new(exit::INVALID_PIPELINE, with_annotations(&d, d.to_string())))
}

/// `report`, preceded in GitHub Actions by an annotation per problem.
pub fn with_annotations(problems: &Diagnostics, report: String) -> String {
    if crate::run::github::active() {
        format!("{}{report}", crate::run::github::diagnostics(problems))
    } else {
        report
    }
}

pub fn new_runtime() -> Result<Runtime, Failure> {
    Runtime::new().map_err(|e| {
        Failure::new(
            exit::INTERNAL,
            format!("error: cannot create the WebAssembly engine: {e:#}"),
        )
    })
}

/// Load plugins and check grants (exit code 4 on problems).
pub async fn prepare_pipeline(
    pipeline: Pipeline,
    runtime: &Runtime,
    cli: &Cli,
) -> Result<Prepared, Failure> {
    let file = pipeline.source.file.clone();
    check_pipeline(pipeline, runtime, cli).await?.map_err(|d| {
        let report = not_runnable(&d, &file);
        Failure::new(exit::PLUGIN_OR_GRANT, with_annotations(&d, report))
    })
}

/// Load plugins and check grants: the problems found, or the pipeline
/// ready to run.
pub async fn check_pipeline(
    pipeline: Pipeline,
    runtime: &Runtime,
    cli: &Cli,
) -> Result<Result<Prepared, Diagnostics>, Failure> {
    let protected = cli.protected()?;
    Ok(prepare(pipeline, runtime, &cli.cache(), &protected).await)
}

/// The report of problems that stop `file` before it runs (exit code 4).
pub fn not_runnable(problems: &Diagnostics, file: &Path) -> String {
    let them = if problems.errors() == 1 {
        "it is"
    } else {
        "they are"
    };
    problems.report(&format!(
        ", so {} cannot run until {them} fixed; no stage ran.",
        file.display()
    ))
}

/// Who is acting: `--as`, or the first identity the environment gives
/// ($CAPSTAN_ACTOR, the CI actor, the login name), or the account's name.
/// Nobody is ever recorded as an unknown someone: without any of these the
/// command is refused. A name is a claim, not a proof (approvals show it as
/// "identity not verified").
pub fn identity(given: Option<&str>) -> Result<String, Failure> {
    given
        .map(str::to_string)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            [
                "CAPSTAN_ACTOR",
                "GITHUB_ACTOR",
                "GITLAB_USER_LOGIN",
                "USER",
                "LOGNAME",
            ]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        })
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .ok_or_else(|| {
            Failure::new(
                exit::USAGE,
                "cannot tell who you are: no --as, no $CAPSTAN_ACTOR, $GITHUB_ACTOR, \
                 $GITLAB_USER_LOGIN, $USER or $LOGNAME, and this account has no name; \
                 pass --as NAME (Capstan records no anonymous decisions)"
                    .to_string(),
            )
        })
}

/// `--env`, checked against the pipeline's environments (default: the first).
pub fn environment(pipeline: &Pipeline, given: Option<&str>) -> Result<String, Failure> {
    let environment = given
        .unwrap_or_else(|| pipeline.default_environment())
        .to_string();
    if !pipeline.environments.contains(&environment) {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "error: environment `{environment}` is not one of {} (from [pipeline] environments in {})",
                pipeline.environments.join(", "),
                pipeline.file.display()
            ),
        ));
    }
    Ok(environment)
}

pub fn warn_unrequested(prepared: &Prepared) {
    for warning in prepared.warnings() {
        eprintln!("{}", crate::text::block(&warning.to_string()));
    }
}

pub fn create_run_dir(cli: &Cli) -> Result<crate::run::RunDir, Failure> {
    crate::run::RunDir::create(&cli.state_dir).map_err(|e| {
        Failure::new(
            exit::INTERNAL,
            format!(
                "error: cannot create a run directory in {}: {e}",
                cli.state_dir.display()
            ),
        )
    })
}

/// The store record of a run about to start.
pub fn new_run(
    prepared: &Prepared,
    dir: &crate::run::RunDir,
    opts: &crate::run::RunOptions,
    kind: RunKind,
) -> NewRun {
    let pipeline = &prepared.pipeline;
    NewRun {
        id: dir.id.clone(),
        pipeline: pipeline.name.clone(),
        pipeline_file: pipeline.file.display().to_string(),
        pipeline_digest: pipeline.digest.clone(),
        environment: opts.environment.clone(),
        author: opts.author.clone(),
        kind,
        target: None,
        undoes: None,
        only: opts.only.clone(),
        run_dir: dir.path.display().to_string(),
        started: jiff::Timestamp::now().to_string(),
        plugins: serde_json::to_value(crate::run::plugin_records(prepared))
            .expect("plugin records serialize"),
        approvers: pipeline.approvers.as_ref().map(|a| a.text.clone()),
        author_keys: pipeline
            .approvers
            .as_ref()
            .map(|a| crate::caps::approval::signature::held_in_agent(&a.signers))
            .unwrap_or_default(),
    }
}

/// A store error as a failure: an unknown run is a usage error.
pub fn store_failure(e: crate::store::StoreError) -> Failure {
    let code = if e.is_unknown_run() {
        exit::USAGE
    } else {
        exit::INTERNAL
    };
    Failure::new(code, format!("error: {e}"))
}
