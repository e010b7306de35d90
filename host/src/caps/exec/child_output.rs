//! Where a child's stdout and stderr go: unlinked files that the host reads
//! as they grow, not pipes. A child outlives a host killed with SIGKILL (it
//! runs in its own process group); writing to a pipe nobody reads would kill
//! it with SIGPIPE at its next line — a Terraform apply stopped halfway, its
//! state locked, resources created but not recorded. Writing to a file, it
//! finishes its work, and `capstan resume` finds it done.

use std::fs::File;
use std::io::{self, Read};
use std::process::Stdio;

use crate::caps::log::{LogSink, OutputLimit};

/// The host's side of one child's output.
pub struct ChildOutput {
    pub stdout: Stream,
    pub stderr: Stream,
}

/// One stream: the host's read handle, and what is kept for the plugin.
pub struct Stream {
    file: File,
    kept: Vec<u8>,
    truncated: bool,
}

impl ChildOutput {
    /// Two files for a child's stdout and stderr; the `Stdio`s go to the child.
    pub fn create() -> io::Result<(ChildOutput, Stdio, Stdio)> {
        let (stdout, out) = Stream::create()?;
        let (stderr, err) = Stream::create()?;
        Ok((ChildOutput { stdout, stderr }, out, err))
    }

    /// Copy what the child appended since the last call to the stage log
    /// (or only count it, for unlogged output), keeping up to `cap` bytes
    /// of each stream for the plugin. Returns how many bytes it read.
    pub fn drain(&mut self, log: &LogSink, logged: bool, cap: usize) -> Result<u64, OutputLimit> {
        Ok(self.stdout.drain(log, logged, cap)? + self.stderr.drain(log, logged, cap)?)
    }

    /// What was kept of stdout and stderr, and whether either was cut.
    pub fn finish(self) -> (Vec<u8>, Vec<u8>, bool) {
        let truncated = self.stdout.truncated || self.stderr.truncated;
        (self.stdout.kept, self.stderr.kept, truncated)
    }
}

impl Stream {
    fn create() -> io::Result<(Stream, Stdio)> {
        let named = tempfile::NamedTempFile::new()?;
        let file = named.reopen()?;
        // Both handles are open: the name can go (nothing is left behind,
        // even if the host dies while the child still writes).
        let (writer, path) = named.into_parts();
        drop(path);
        let stream = Stream {
            file,
            kept: Vec::new(),
            truncated: false,
        };
        Ok((stream, Stdio::from(writer)))
    }

    fn drain(&mut self, log: &LogSink, logged: bool, cap: usize) -> Result<u64, OutputLimit> {
        let mut buf = [0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(0) | Err(_) => return Ok(total),
                Ok(n) => n,
            };
            total += n as u64;
            let chunk = &buf[..n];
            if logged {
                log.write(chunk)?;
            } else {
                log.count(chunk)?;
            }
            let room = cap.saturating_sub(self.kept.len());
            self.kept.extend_from_slice(&chunk[..n.min(room)]);
            self.truncated |= n > room;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_is_appended_and_keeps_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogSink::create(&dir.path().join("stage.log"), 1 << 20, None).unwrap();
        let (mut out, stdout, _stderr) = ChildOutput::create().unwrap();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "printf 'one\\n'; sleep 0.2; printf 'two\\n'"])
            .stdout(stdout)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        out.drain(&log, true, 5).unwrap();
        child.wait().unwrap();
        out.drain(&log, true, 5).unwrap();
        let (kept, err, truncated) = out.finish();
        assert_eq!(
            (kept.as_slice(), err.as_slice(), truncated),
            (b"one\nt".as_slice(), b"".as_slice(), true)
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stage.log")).unwrap(),
            "one\ntwo\n"
        );
    }

    #[test]
    fn a_child_whose_reader_is_gone_still_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        let (out, stdout, stderr) = ChildOutput::create().unwrap();
        drop(out); // as if the host had died
        let status = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("sleep 0.1; seq 1 100000; echo ok > {}", done.display()),
            ])
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .unwrap();
        assert!(status.success(), "{status:?}");
        let mut text = String::new();
        File::open(&done)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "ok\n");
    }
}
