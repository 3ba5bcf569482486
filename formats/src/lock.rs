//! Exclusive locks on output folders (a `train` run folder, a `preprocess --out`), so two
//! processes never write one folder at once.
//!
//! The lock is a file, [`LOCK_FILE`], holding the holder's pid, host and start time, with a
//! `flock` on it for as long as the holder lives. The `flock` is the truth: the kernel drops it
//! when its process ends, however it ends, so a lock file whose `flock` nobody holds is stale
//! whatever pid it names (even a live, unrelated one) and whatever it holds (even nothing or
//! garbage): it is taken over and the caller is told, so it can log it. The file appears under
//! its name already flocked and complete (written under a temporary name, then hard-linked), so
//! a reader never sees a half-made lock. Where the filesystem has no `flock` (Lustre without
//! `-o flock`), the pid decides: a lock whose process is gone on this host is taken over. A lock
//! from another host is never taken over (its `flock` may be local to that host on a network
//! filesystem): the error says how to remove it.

use crate::error::FormatError;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Name of the lock file inside a locked folder.
pub const LOCK_FILE: &str = ".h5gpt.lock";

/// Who holds a lock: what [`LOCK_FILE`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Start of the lock, in seconds since the Unix epoch.
    pub started: u64,
    /// The command holding it (`train`, `preprocess`).
    pub command: String,
}

impl LockHolder {
    /// This process, running `command`.
    pub fn current(command: &str) -> LockHolder {
        LockHolder {
            pid: std::process::id(),
            host: hostname(),
            started: unix_now(),
            command: command.into(),
        }
    }
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let age = unix_now().saturating_sub(self.started);
        write!(
            f,
            "`{}` (pid {} on host {}, started {age} s ago)",
            self.command, self.pid, self.host
        )
    }
}

/// A lock found stale and replaced: what its file said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleLock {
    /// The holder it named, when the file was readable.
    pub holder: Option<LockHolder>,
    /// Why it was stale.
    pub why: &'static str,
}

impl std::fmt::Display for StaleLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.holder {
            Some(holder) => write!(f, "{holder}: stale, {}", self.why),
            None => write!(f, "an empty or unreadable lock file: stale, {}", self.why),
        }
    }
}

/// Why a folder could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// A live process on this host holds it.
    #[error("{dir} is in use by {holder}\n---> HINT: two processes must not write one folder; wait for that one to finish, stop it, or pick another {flag}")]
    Held {
        /// The folder.
        dir: PathBuf,
        /// The holder.
        holder: LockHolder,
        /// The option naming the folder (`--out`).
        flag: String,
    },
    /// A process on another host holds it (or held it and died there).
    #[error("{dir} is locked by {holder}; a lock from another host is never taken over\n---> HINT: if no process on {host} uses this folder any more, remove {lock} and rerun", host = holder.host, lock = dir.join(LOCK_FILE).display())]
    OtherHost {
        /// The folder.
        dir: PathBuf,
        /// The holder.
        holder: LockHolder,
    },
    /// The lock file exists but says nothing readable, on a filesystem without `flock` (so
    /// nothing tells whether a process still holds it).
    #[error("{path}: unreadable lock file ({text:?})\n---> HINT: if no process uses this folder, remove the file and rerun")]
    Unreadable {
        /// The lock file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
    /// The lock file cannot be created or read.
    #[error(transparent)]
    Io(#[from] FormatError),
}

/// A held lock; dropping it removes the lock file (and the folder, when the lock created it
/// and nothing else was written there).
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    /// Open for as long as the lock is held: the `flock` lives with it.
    _file: File,
    created_dir: Option<PathBuf>,
    took_over: Option<StaleLock>,
}

impl RunLock {
    /// Locks `dir` (created if missing) for `command`; `flag` names the option that chose the
    /// folder, for the error message.
    pub fn acquire(dir: &Path, command: &str, flag: &str) -> Result<RunLock, LockError> {
        let created_dir = (!dir.exists()).then(|| dir.to_path_buf());
        std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let me = LockHolder::current(command);
        let mut took_over = None;
        let mut last_holder = None;
        // A few rounds: a holder may release, or a stale lock be removed, between two looks.
        for _ in 0..10 {
            if let Some(file) = create(dir, &path, &me)? {
                let lock = RunLock {
                    path,
                    _file: file,
                    created_dir,
                    took_over,
                };
                if let Some(seconds) = crate::fault::armed("hold-lock") {
                    eprintln!(
                        "H5GPT_FAULT: holding the lock on {} for {seconds} s (testing aid)",
                        dir.display()
                    );
                    std::thread::sleep(std::time::Duration::from_secs(seconds as u64));
                }
                return Ok(lock);
            }
            match examine(dir, &path, &me, flag)? {
                Found::Gone => {}
                Found::Stale(stale) => took_over = Some(stale),
                Found::Starting(holder) => {
                    last_holder = holder;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Found::Refused(e) => return Err(*e),
            }
        }
        Err(LockError::Held {
            dir: dir.to_path_buf(),
            holder: last_holder.unwrap_or(LockHolder {
                pid: 0,
                host: "?".into(),
                started: 0,
                command: "?".into(),
            }),
            flag: flag.into(),
        })
    }

    /// The stale lock this one replaced (no process held its `flock`), for the log.
    pub fn took_over(&self) -> Option<&StaleLock> {
        self.took_over.as_ref()
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates the lock file for `me`: written and flocked under a temporary name, then
/// hard-linked to `path`, so it appears complete and held. `None` when `path` exists.
fn create(dir: &Path, path: &Path, me: &LockHolder) -> Result<Option<File>, LockError> {
    let json = serde_json::to_vec(me).expect("a lock holder serializes");
    let staged = dir.join(format!(".{LOCK_FILE}.{}.tmp", me.pid));
    let _ = std::fs::remove_file(&staged);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staged)
        .map_err(|e| FormatError::io(&staged, e))?;
    let _ = flock(&file);
    let written = file.write_all(&json).and_then(|()| file.sync_all());
    let linked = written
        .map_err(|e| FormatError::io(&staged, e))
        .map(|()| std::fs::hard_link(&staged, path));
    let _ = std::fs::remove_file(&staged);
    match linked? {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(None),
        Err(_) => {
            // No hard links here: create the file in place, flock it, then name ourselves.
            drop(file);
            file = match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(None),
                Err(e) => return Err(FormatError::io(path, e).into()),
            };
            let _ = flock(&file);
            file.write_all(&json)
                .and_then(|()| file.sync_all())
                .map_err(|e| FormatError::io(path, e))?;
        }
    }
    crate::fsio::fsync_dir(dir)?;
    Ok(Some(file))
}

/// What an existing lock file turned out to be.
enum Found {
    /// Removed by its holder meanwhile: try again.
    Gone,
    /// Stale, and removed: try again.
    Stale(StaleLock),
    /// Being created a moment ago (or held by a holder we cannot name yet): wait a little.
    Starting(Option<LockHolder>),
    /// Held: the error to return.
    Refused(Box<LockError>),
}

/// Looks at the existing lock file `path`: held (its `flock` is taken, or, without `flock`,
/// its pid lives), or stale and then removed.
fn examine(dir: &Path, path: &Path, me: &LockHolder, flag: &str) -> Result<Found, LockError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Gone),
        Err(e) => return Err(FormatError::io(path, e).into()),
    };
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let holder: Option<LockHolder> = serde_json::from_str(&text).ok();
    let refused = |e: LockError| -> Result<Found, LockError> { Ok(Found::Refused(Box::new(e))) };
    if let Some(holder) = holder.as_ref().filter(|h| h.host != me.host) {
        return refused(LockError::OtherHost {
            dir: dir.to_path_buf(),
            holder: holder.clone(),
        });
    }
    let meta = file.metadata().map_err(|e| FormatError::io(path, e))?;
    // Whether `path` still names the file we opened (not removed, nor replaced, meanwhile).
    let same_file = || {
        std::fs::metadata(path).is_ok_and(|now| now.ino() == meta.ino() && now.dev() == meta.dev())
    };
    let young = meta
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age < std::time::Duration::from_secs(1));
    let why = match flock(&file) {
        Flock::Held if !same_file() => return Ok(Found::Gone),
        Flock::Held => {
            return match holder {
                Some(holder) => refused(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder,
                    flag: flag.into(),
                }),
                // Held, but not named yet: its holder is writing it.
                None => Ok(Found::Starting(None)),
            };
        }
        Flock::Taken if !same_file() => return Ok(Found::Gone),
        // Free, empty and just made: a creator without hard links, between its create and
        // its flock.
        Flock::Taken if holder.is_none() && young => return Ok(Found::Starting(None)),
        Flock::Taken => "no process holds its flock",
        Flock::Unsupported => match &holder {
            Some(h) if pid_alive(h.pid) => {
                return refused(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: h.clone(),
                    flag: flag.into(),
                })
            }
            Some(_) => "its process is gone (this filesystem has no flock)",
            None => {
                return refused(LockError::Unreadable {
                    path: path.to_path_buf(),
                    text,
                })
            }
        },
    };
    // We hold its flock (or there is none): nobody else can be removing or taking it now.
    match std::fs::remove_file(path) {
        Ok(()) => Ok(Found::Stale(StaleLock { holder, why })),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Found::Gone),
        Err(e) => Err(FormatError::io(path, e).into()),
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.created_dir {
            // Only succeeds when the folder is empty: a run that failed before writing
            // anything leaves no folder behind.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flock {
    /// Taken (and kept for as long as the file stays open).
    Taken,
    /// Another open file holds it.
    Held,
    /// The filesystem has no `flock`.
    Unsupported,
}

/// Tries an exclusive, non-blocking `flock` on `file`.
fn flock(file: &File) -> Flock {
    // SAFETY: flock only reads the descriptor, which `file` keeps open during the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Flock::Taken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EWOULDBLOCK) => Flock::Held,
        _ => Flock::Unsupported,
    }
}

/// Whether process `pid` exists on this host (and is not a zombie).
fn pid_alive(pid: u32) -> bool {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid_t <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let rc = unsafe { libc::kill(pid_t, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // A zombie has exited; only its parent has not collected it yet.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, which is what gethostname may write.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_a_dead_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let lock = RunLock::acquire(&out, "train", "--out").unwrap();
        assert!(lock.took_over().is_none());
        let err = RunLock::acquire(&out, "train", "--out").unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        assert!(err.to_string().contains(&std::process::id().to_string()));
        drop(lock);
        assert!(
            !out.exists(),
            "a folder the lock created and nothing else used is removed"
        );

        // A lock left by a process that has exited.
        std::fs::create_dir_all(&out).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = LockHolder {
            pid: dead,
            ..LockHolder::current("preprocess")
        };
        std::fs::write(out.join(LOCK_FILE), serde_json::to_vec(&stale).unwrap()).unwrap();
        let lock = RunLock::acquire(&out, "train", "--out").unwrap();
        assert_eq!(lock.took_over().unwrap().holder.as_ref(), Some(&stale));
        drop(lock);
        assert!(out.is_dir(), "a folder that existed before stays");

        // Another host's lock is never taken over.
        let foreign = LockHolder {
            host: "elsewhere.invalid".into(),
            ..stale
        };
        std::fs::write(out.join(LOCK_FILE), serde_json::to_vec(&foreign).unwrap()).unwrap();
        let err = RunLock::acquire(&out, "train", "--out").unwrap_err();
        assert!(matches!(err, LockError::OtherHost { .. }), "{err}");
        assert!(err.to_string().contains("remove"), "{err}");
    }

    /// Sets `path`'s mtime a minute back (a lock file made just now may be one being created).
    fn age(path: &Path) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        let then = SystemTime::now() - std::time::Duration::from_secs(60);
        file.set_modified(then).unwrap();
    }

    /// Issue 24 item 16: the flock is the truth. A lock file naming a live but unrelated
    /// process (pid 1), an empty one and a garbled one, with no flock held, are stale and
    /// taken over (and say so); the same files with their flock held block.
    #[test]
    fn a_lock_whose_flock_is_free_is_stale_whatever_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        std::fs::create_dir_all(&out).unwrap();
        let lock_file = out.join(LOCK_FILE);
        let unrelated = LockHolder {
            pid: 1,
            ..LockHolder::current("train")
        };
        let cases = [
            serde_json::to_string(&unrelated).unwrap(),
            String::new(),
            "\u{0}garbled{".to_string(),
        ];
        for text in &cases {
            std::fs::write(&lock_file, text).unwrap();
            age(&lock_file);
            let lock = RunLock::acquire(&out, "train", "--out").unwrap();
            let stale = lock.took_over().expect("taken over").clone();
            assert_eq!(stale.why, "no process holds its flock", "{text:?}");
            let said = stale.to_string();
            if text.is_empty() || text.contains("garbled") {
                assert!(stale.holder.is_none());
                assert!(said.contains("empty or unreadable"), "{said}");
            } else {
                assert!(said.contains("pid 1 "), "{said}");
            }
            // Ours now: it names this process.
            let ours: LockHolder =
                serde_json::from_str(&std::fs::read_to_string(&lock_file).unwrap()).unwrap();
            assert_eq!(ours.pid, std::process::id());
            drop(lock);
            assert!(!lock_file.exists());
        }

        // The same pid-1 file with its flock held (by another open file) blocks.
        std::fs::write(&lock_file, &cases[0]).unwrap();
        let holder = std::fs::File::open(&lock_file).unwrap();
        assert_eq!(flock(&holder), Flock::Taken);
        let err = RunLock::acquire(&out, "train", "--out").unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        assert!(err.to_string().contains("pid 1 "), "{err}");
        // And a garbled one whose flock is held is waited for, then refused, never removed.
        std::fs::write(&lock_file, "garbled").unwrap();
        let err = RunLock::acquire(&out, "train", "--out").unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&lock_file).unwrap(), "garbled");
        drop(holder);
        age(&lock_file);
        let lock = RunLock::acquire(&out, "train", "--out").unwrap();
        assert!(lock.took_over().is_some());
    }
}
