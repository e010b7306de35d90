//! Where a child's stdout and stderr go: unlinked files that the host reads
//! as they grow, not pipes. A child outlives a host killed with SIGKILL (it
//! runs in its own process group); writing to a pipe nobody reads would kill
//! it with SIGPIPE at its next line — a Terraform apply stopped halfway, its
//! state locked, resources created but not recorded. Writing to a file, it
//! finishes its work, and `capstan resume` finds it done.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::process::Stdio;

use crate::caps::log::{LogSink, OutputLimit};

/// The host's side of one child's output.
pub struct ChildOutput {
    pub stdout: Stream,
    pub stderr: Stream,
    /// What is read at once, for either stream: large, so that a child
    /// writing a lot costs few reads, log writes and lock rounds.
    buf: Vec<u8>,
}

/// The size of [`ChildOutput`]'s read buffer.
const READ_SIZE: usize = 256 * 1024;

/// How much output read accumulates in the file before its pages are
/// freed (see [`Stream::release`]).
const RELEASE_STEP: u64 = 8 << 20;

/// One stream: the host's read handle, and what is kept for the plugin.
pub struct Stream {
    file: File,
    kept: Vec<u8>,
    truncated: bool,
    /// How far the file was read (or counted).
    at: u64,
    /// Up to where its pages were freed.
    released: u64,
}

impl ChildOutput {
    /// Two files for a child's stdout and stderr; the `Stdio`s go to the child.
    pub fn create() -> io::Result<(ChildOutput, Stdio, Stdio)> {
        let (stdout, out) = Stream::create()?;
        let (stderr, err) = Stream::create()?;
        let buf = vec![0; READ_SIZE];
        Ok((
            ChildOutput {
                stdout,
                stderr,
                buf,
            },
            out,
            err,
        ))
    }

    /// Copy what the child appended since the last call to the stage log
    /// (or only count it, for unlogged output), keeping up to `cap` bytes
    /// of each stream for the plugin. Returns how many bytes it read.
    pub fn drain(&mut self, log: &LogSink, logged: bool, cap: usize) -> Result<u64, OutputLimit> {
        let buf = &mut self.buf;
        Ok(self.stdout.drain(buf, log, logged, cap)? + self.stderr.drain(buf, log, logged, cap)?)
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
            at: 0,
            released: 0,
        };
        Ok((stream, Stdio::from(writer)))
    }

    fn drain(
        &mut self,
        buf: &mut [u8],
        log: &LogSink,
        logged: bool,
        cap: usize,
    ) -> Result<u64, OutputLimit> {
        let mut total = 0u64;
        loop {
            if !logged && self.kept.len() >= cap {
                return Ok(total + self.skip(log)?);
            }
            let n = match self.file.read(buf) {
                Ok(0) | Err(_) => return Ok(total),
                Ok(n) => n,
            };
            total += n as u64;
            self.at += n as u64;
            self.release();
            let chunk = &buf[..n];
            if logged {
                log.write(chunk)?;
            } else {
                log.count(n as u64)?;
            }
            let room = cap.saturating_sub(self.kept.len());
            self.kept.extend_from_slice(&chunk[..n.min(room)]);
            self.truncated |= n > room;
        }
    }

    /// Unlogged output of which nothing more is kept: counted, not read
    /// (the file's size says how much was appended). Returns how much.
    fn skip(&mut self, log: &LogSink) -> Result<u64, OutputLimit> {
        let Ok(meta) = self.file.metadata() else {
            return Ok(0);
        };
        let n = meta.len().saturating_sub(self.at);
        if n == 0 || self.file.seek(SeekFrom::Start(self.at + n)).is_err() {
            return Ok(0);
        }
        self.at += n;
        self.release();
        log.count(n)?;
        self.truncated = true;
        Ok(n)
    }

    /// Free the pages of what was read (a hole punched in the file; its
    /// size stays, the child goes on writing at its end). Without it a
    /// child printing gigabytes would fill the page cache with output
    /// nobody reads again, written back to disk (and discarded) for
    /// nothing. Best effort: a file system without holes keeps them.
    fn release(&mut self) {
        let end = self.at & !(RELEASE_STEP - 1);
        if end <= self.released {
            return;
        }
        use nix::fcntl::{FallocateFlags, fallocate};
        let _ = fallocate(
            &self.file,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            self.released as i64,
            (end - self.released) as i64,
        );
        self.released = end;
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

    /// A child that prints `text` on stdout, finished; its output not
    /// drained yet.
    fn printed(text: &str) -> ChildOutput {
        let (out, stdout, _stderr) = ChildOutput::create().unwrap();
        let status = std::process::Command::new("printf")
            .arg(text)
            .stdout(stdout)
            .status()
            .unwrap();
        assert!(status.success());
        out
    }

    #[test]
    fn unlogged_output_is_counted_and_kept_up_to_the_cap_not_logged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage.log");
        let log = LogSink::create(&path, 1000, None).unwrap();
        let mut out = printed("0123456789abcdefghij");
        assert_eq!(out.drain(&log, false, 4).unwrap(), 20);
        assert_eq!(out.drain(&log, false, 4).unwrap(), 0);
        assert_eq!(log.written(), 20);
        let (kept, _, truncated) = out.finish();
        assert_eq!((kept.as_slice(), truncated), (b"0123".as_slice(), true));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn unlogged_output_past_max_output_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage.log");
        let log = LogSink::create(&path, 8, None).unwrap();
        let mut out = printed("0123456789abcdefghij");
        assert!(out.drain(&log, false, 0).is_err());
        assert!(log.exceeded());
        assert_eq!(log.written(), 8);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[capstan] output limit of 8 bytes exceeded; the stage is stopped\n"
        );
    }

    /// Whether the temporary directory's file system punches holes.
    fn holes_punched() -> bool {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[1; 8192]).unwrap();
        use nix::fcntl::{FallocateFlags, fallocate};
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        let mut head = [1; 4096];
        fallocate(&file, flags, 0, 4096).is_ok()
            && file.read_at(&mut head, 0).unwrap() == 4096
            && head == [0; 4096]
    }

    #[test]
    fn output_read_is_freed_and_all_of_it_reaches_the_log() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage.log");
        let log = LogSink::create(&path, 64 << 20, None).unwrap();
        let (mut out, stdout, _stderr) = ChildOutput::create().unwrap();
        let status = std::process::Command::new("seq")
            .args(["1", "2500000"])
            .stdout(stdout)
            .status()
            .unwrap();
        assert!(status.success());
        let read = out.drain(&log, true, 0).unwrap();
        let want: String = (1..=2_500_000).map(|i| format!("{i}\n")).collect();
        assert_eq!(read, want.len() as u64);
        assert!(read > 2 * RELEASE_STEP);
        assert!(std::fs::read_to_string(&path).unwrap() == want);
        if holes_punched() {
            let mut head = [1; 4096];
            out.stdout.file.read_at(&mut head, 0).unwrap();
            assert_eq!(head, [0; 4096], "the output read was not freed");
            assert_eq!(out.stdout.released, 2 * RELEASE_STEP);
        }
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
