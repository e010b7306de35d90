//! `capstan logs`: a run's stage logs, whole or followed as they grow.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exit::{self, Failure};
use crate::store::{RunState, latest_attempts};
use crate::text::{block, inline};

/// Print a run's stage logs (every attempt, in order), or follow them while
/// the run goes on.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan logs 20261126-101500-7f3a            # every stage, one after another
  capstan logs 20261126-101500-7f3a apply      # one stage
  capstan logs 20261126-101500-7f3a --follow   # live, lines prefixed with [stage]")]
pub struct Args {
    /// The run id (or a unique prefix of it).
    pub run: String,
    /// Only this stage.
    pub stage: Option<String>,
    /// Keep printing what is appended until the run stops running.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

const POLL: Duration = Duration::from_millis(200);

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let run = store.run(&args.run).map_err(super::store_failure)?;
    let logs = Path::new(&run.run_dir).join("logs");
    let known: Vec<String> = latest_attempts(store.stages(&run.id).map_err(super::store_failure)?)
        .into_iter()
        .map(|s| s.name)
        .collect();
    let mut stages: Vec<String> = match &args.stage {
        Some(stage) => {
            if !known.contains(stage) && !logs.join(format!("{stage}.log")).exists() && !args.follow
            {
                return Err(Failure::new(
                    exit::USAGE,
                    format!(
                        "error: run {} has no log for stage `{stage}`; its stages: {}",
                        run.id,
                        known.join(", ")
                    ),
                ));
            }
            vec![stage.clone()]
        }
        None => known,
    };
    let mut out = std::io::stdout().lock();
    if !args.follow {
        for stage in &stages {
            let path = logs.join(format!("{stage}.log"));
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            if args.stage.is_none() {
                let _ = writeln!(out, "── {} ──", inline(stage));
            }
            // The log holds what the plugin and its programs printed, raw:
            // shown escaped, line by line (a lone `\r` or an escape
            // sequence is shown, never interpreted).
            let _ = out.write_all(block(&String::from_utf8_lossy(&text)).as_bytes());
        }
        return Ok(exit::OK);
    }
    let prefix = args.stage.is_none();
    let mut tails: Vec<Tail> = stages.iter().map(|s| Tail::new(&logs, s)).collect();
    loop {
        // Read the status first: whatever was written before it stopped
        // running is then printed by this last round.
        let status = store.run(&run.id).map_err(super::store_failure)?.status;
        if args.stage.is_none() {
            for s in latest_attempts(store.stages(&run.id).map_err(super::store_failure)?) {
                if !stages.contains(&s.name) {
                    tails.push(Tail::new(&logs, &s.name));
                    stages.push(s.name);
                }
            }
        }
        for tail in &mut tails {
            tail.pump(&mut out, prefix);
        }
        let _ = out.flush();
        if status != RunState::Running {
            for tail in &mut tails {
                tail.finish(&mut out, prefix);
            }
            return Ok(exit::OK);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One log file being followed.
struct Tail {
    stage: String,
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new(logs: &Path, stage: &str) -> Tail {
        Tail {
            stage: stage.to_string(),
            path: logs.join(format!("{stage}.log")),
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Print the complete lines appended since the last call.
    fn pump(&mut self, out: &mut impl Write, prefix: bool) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = file.read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(at) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=at).collect();
            self.write(out, &line, prefix);
        }
    }

    fn finish(&mut self, out: &mut impl Write, prefix: bool) {
        self.pump(out, prefix);
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            self.write(out, &line, prefix);
        }
    }

    /// One line of the log (ending with `\n`), escaped like the whole logs.
    fn write(&self, out: &mut impl Write, line: &[u8], prefix: bool) {
        if prefix {
            let _ = write!(out, "[{}] ", inline(&self.stage));
        }
        let _ = out.write_all(block(&String::from_utf8_lossy(line)).as_bytes());
    }
}
