//! `capstan logs`: a run's stage logs, whole or followed as they grow.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exit::{self, Failure};
use crate::store::{RunState, latest_attempts};
use crate::term;
use crate::text::{block, inline};

/// Print a run's stage logs (every attempt, in order), or follow them while
/// the run goes on.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan logs 20261126-101500-7f3a            # every stage, one after another
  capstan logs latest apply                    # one stage of the run that started last
  capstan logs latest@production --follow      # live, lines prefixed with [stage]")]
pub struct Args {
    /// The run: its id, a unique prefix or suffix of it, `latest` (the run
    /// that started last) or `latest@<environment>`.
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
    let mut out = term::stdout();
    if !args.follow {
        for stage in &stages {
            let path = logs.join(format!("{stage}.log"));
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            if args.stage.is_none() {
                writeln!(out, "── {} ──", inline(stage)).map_err(term::output_failure)?;
            }
            // The log holds what the plugin and its programs printed, raw:
            // shown escaped, line by line (a lone `\r` or an escape
            // sequence is shown, never interpreted).
            out.write_all(block(&String::from_utf8_lossy(&text)).as_bytes())
                .map_err(term::output_failure)?;
        }
        out.flush().map_err(term::output_failure)?;
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
        // A reader gone (`| head`) ends the follow, quietly.
        for tail in &mut tails {
            tail.pump(&mut out, prefix).map_err(term::output_failure)?;
        }
        out.flush().map_err(term::output_failure)?;
        if status != RunState::Running {
            for tail in &mut tails {
                tail.finish(&mut out, prefix)
                    .map_err(term::output_failure)?;
            }
            out.flush().map_err(term::output_failure)?;
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

    /// Print the complete lines appended since the last call. A log not
    /// (yet) readable prints nothing; only writing fails.
    fn pump(&mut self, out: &mut impl Write, prefix: bool) -> io::Result<()> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Ok(());
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let Ok(n) = file.read_to_end(&mut buf) else {
            return Ok(());
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(at) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=at).collect();
            self.write(out, &line, prefix)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut impl Write, prefix: bool) -> io::Result<()> {
        self.pump(out, prefix)?;
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            self.write(out, &line, prefix)?;
        }
        Ok(())
    }

    /// One line of the log (ending with `\n`), escaped like the whole logs.
    fn write(&self, out: &mut impl Write, line: &[u8], prefix: bool) -> io::Result<()> {
        if prefix {
            write!(out, "[{}] ", inline(&self.stage))?;
        }
        out.write_all(block(&String::from_utf8_lossy(line)).as_bytes())
    }
}
