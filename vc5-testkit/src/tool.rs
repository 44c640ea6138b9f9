//! What the lab's user-space stand-ins (`vc5-decap`, `vc5-vlan-relay`)
//! share: finding the binary, running it in a network namespace with a
//! stats file and a log, waiting until it says it is ready, polling its
//! counters, stopping it; and, for the binaries themselves, writing that
//! stats file and the system calls both make.

use serde_json::Value;
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The counters a tool writes to its stats file, which say when it is ready.
pub trait ToolStats: Sized + fmt::Debug {
    /// The binary, e.g. `vc5-decap`.
    const PROGRAM: &'static str;
    /// The variable that names the binary, e.g. `VC5_DECAP`.
    const ENV: &'static str;
    fn from_json(v: &Value) -> io::Result<Self>;
    /// It has set up everything and receives.
    fn ready(&self) -> bool;
}

/// Reads a tool's stats file.
pub fn read_stats<S: ToolStats>(path: &Path) -> io::Result<S> {
    let text = fs::read_to_string(path)?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    S::from_json(&v)
}

/// Writes a stats file atomically (a temporary file renamed over it), so a
/// reader never sees half of it.
pub fn write_stats(path: &Path, json: &Value) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    fs::write(&tmp, format!("{json}\n"))?;
    fs::rename(&tmp, path)
}

/// The binary: `explicit`, else `$ENV`, else the one beside the running
/// executable or its parent directory (test binaries live in `deps/`).
fn program_path<S: ToolStats>(explicit: Option<&Path>) -> io::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(S::ENV) {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| io::Error::other("executable has no directory"))?;
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let p = d.join(S::PROGRAM);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no {p} beside {} (build it with `cargo build -p vc5-testkit --bin {p}`, or set ${})",
            exe.display(),
            S::ENV,
            p = S::PROGRAM
        ),
    ))
}

/// A tool running in a namespace; stopped (SIGTERM, then SIGKILL after 5 s)
/// when dropped.
#[derive(Debug)]
pub struct Tool<S> {
    child: Option<Child>,
    dir: PathBuf,
    stats: PathBuf,
    ns: String,
    /// `S::PROGRAM`, for what needs no `S`.
    program: &'static str,
    _stats: std::marker::PhantomData<S>,
}

static DIRS: AtomicU32 = AtomicU32::new(0);

impl<S: ToolStats> Tool<S> {
    /// Starts the tool (`program`, or where [`ToolStats::ENV`] or the running
    /// executable say) with `args` in the network namespace named `ns`
    /// (`ip netns`), and waits (10 s at most) until its stats say it is
    /// ready. Its stats file and log live in a directory of their own under
    /// the temporary directory, removed when it stops.
    pub fn spawn_in(ns: &str, program: Option<&Path>, args: Vec<String>) -> io::Result<Self> {
        let program = program_path::<S>(program)?;
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{}-{}-{n}", S::PROGRAM, std::process::id()));
        fs::create_dir_all(&dir)?;
        let stats = dir.join("stats.json");
        let log = fs::File::create(dir.join("log"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(&program)
            .args(args)
            .arg("--stats")
            .arg(&stats)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut t: Self = Tool {
            child: Some(child),
            dir,
            stats,
            ns: ns.to_string(),
            program: S::PROGRAM,
            _stats: std::marker::PhantomData,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if t.stats().is_ok_and(|s| s.ready()) {
                return Ok(t);
            }
            if let Some(st) = t.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(io::Error::other(format!(
                    "{} in {} exited ({st}) before it was ready: {}",
                    S::PROGRAM,
                    t.ns,
                    t.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} in {} not ready in 10 s: {}", S::PROGRAM, t.ns, t.log()),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What it printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The stats file it writes.
    pub fn stats_path(&self) -> &Path {
        &self.stats
    }

    /// Its counters as last written (within 50 ms of a change).
    pub fn stats(&self) -> io::Result<S> {
        read_stats(&self.stats)
    }

    /// Polls its counters (every 5 ms) until `done` holds, for `timeout` at
    /// most; on a timeout, an error that shows the last counters read and
    /// its log.
    pub fn wait_for(&self, timeout: Duration, mut done: impl FnMut(&S) -> bool) -> io::Result<S> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            match self.stats() {
                Ok(s) if done(&s) => return Ok(s),
                Ok(s) => last = Some(s),
                Err(e) if last.is_none() && Instant::now() > deadline => return Err(e),
                Err(_) => {}
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{}'s counters did not get there in {timeout:?}: {last:?}\n{}",
                        S::PROGRAM,
                        self.log()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops it with SIGTERM and returns its final counters; an error if it
    /// did not exit with status 0 within 5 s.
    pub fn stop(mut self) -> io::Result<S> {
        let status = self.terminate()?;
        let stats = self.stats();
        if !status.success() {
            return Err(io::Error::other(format!(
                "{} exited with {status}: {}",
                S::PROGRAM,
                self.log()
            )));
        }
        stats
    }
}

impl<S> Tool<S> {
    fn terminate(&mut self) -> io::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other("already stopped"));
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let st = child.wait()?;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} ignored SIGTERM for 5 s (killed: {st})", self.program),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl<S> Drop for Tool<S> {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A system call's return value as an `io::Result`.
pub(crate) fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `ip ARGS…`, failing with its stderr.
pub(crate) fn ip_cmd(args: &[&str]) -> io::Result<()> {
    crate::netns::run(Command::new("ip").args(args)).map(|_| ())
}

/// Blocks SIGTERM, SIGINT and SIGHUP and returns a signalfd for them: a
/// tool's event loop ends when it becomes readable.
pub(crate) fn signal_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; the signals are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    // SAFETY: blocks these signals for this (single-threaded) process.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
    // SAFETY: signalfd with a valid set, a new descriptor.
    let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: fd is the signalfd just made, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
