//! Exclusive locks on output folders (a `train` run folder, a `preprocess --out`), so two
//! processes never write one folder at once.
//!
//! The lock is a file, [`LOCK_FILE`], created with `O_EXCL` and holding the holder's pid, host
//! and start time, plus a `flock` on it where the filesystem supports one (it is unreliable on
//! NFS and Lustre, so the file is what counts). A lock whose process is gone on this host is
//! taken over, and the caller is told so it can log it; a lock from another host is never
//! taken over, since its pid means nothing here: the error says how to remove it.

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
    /// The lock file exists but says nothing readable, and no process holds its `flock`.
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
    took_over: Option<LockHolder>,
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
        // A few rounds: a holder may release, or a stale lock be removed, between two looks.
        for _ in 0..5 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    // flock first, so a reader that finds the file still empty sees it held.
                    if flock(&file) == Flock::Held {
                        continue;
                    }
                    let json = serde_json::to_vec(&me).expect("a lock holder serializes");
                    file.write_all(&json)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| FormatError::io(&path, e))?;
                    crate::fsio::fsync_dir(dir)?;
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
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(FormatError::io(&path, e).into()),
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(FormatError::io(&path, e).into()),
            };
            let held = match File::open(&path) {
                Ok(file) => flock(&file) == Flock::Held,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(FormatError::io(&path, e).into()),
            };
            let holder: Option<LockHolder> = serde_json::from_str(&text).ok();
            match holder {
                Some(holder) if holder.host != me.host => {
                    return Err(LockError::OtherHost {
                        dir: dir.to_path_buf(),
                        holder,
                    })
                }
                Some(holder) if held || pid_alive(holder.pid) => {
                    return Err(LockError::Held {
                        dir: dir.to_path_buf(),
                        holder,
                        flag: flag.into(),
                    })
                }
                Some(holder) => {
                    // Its process is gone: the lock is stale.
                    match std::fs::remove_file(&path) {
                        Ok(()) => took_over = Some(holder),
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(FormatError::io(&path, e).into()),
                    }
                }
                None if held => {
                    // Created a moment ago; its holder has not written its name yet.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                None => return Err(LockError::Unreadable { path, text }),
            }
        }
        let holder = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(LockHolder {
                pid: 0,
                host: "?".into(),
                started: 0,
                command: "?".into(),
            });
        Err(LockError::Held {
            dir: dir.to_path_buf(),
            holder,
            flag: flag.into(),
        })
    }

    /// The stale lock this one replaced (its process had died), for the log.
    pub fn took_over(&self) -> Option<&LockHolder> {
        self.took_over.as_ref()
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
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
        assert_eq!(lock.took_over(), Some(&stale));
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
}
