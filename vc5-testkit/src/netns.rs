//! Network namespaces of the tests' own: one type for the whole test kit.
//!
//! A [`Netns`] has a name unique to this process (`vc5t-<pid>-<n>-<tag>`),
//! `lo` up, and is deleted when dropped, after whatever still runs in it is
//! killed: only processes a test started can be in a namespace it created.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub(crate) fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("vc5t-{}-{n}-{tag}", std::process::id())
}

/// Runs `cmd`; its stdout, or an error with its status and output.
pub(crate) fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{:?} failed ({}): {}{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop (after killing what runs in it).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with `lo` up, named `vc5t-<pid>-<n>-<tag>`.
    pub fn new(tag: &str) -> io::Result<Netns> {
        let name = unique(tag);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args…`.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `ip netns exec NAME args…`: a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> io::Result<String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// Runs `sh -ec script` inside the namespace.
    pub fn sh(&self, script: &str) -> io::Result<String> {
        self.exec(&["sh", "-ec", script])
    }

    /// Runs `f` on this thread inside the namespace (for calls that act on
    /// the caller's namespace, such as attaching XDP by ifindex), then
    /// returns the thread to its own namespace, also if `f` panics.
    pub fn run_in<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Back(fs::File);
        impl Drop for Back {
            fn drop(&mut self) {
                // SAFETY: setns on a namespace fd; it only affects this thread.
                let r = unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "back to the original network namespace");
            }
        }
        let back = Back(fs::File::open("/proc/thread-self/ns/net").expect("own netns"));
        crate::enter_netns(&self.name);
        let out = f();
        drop(back);
        out
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that has entered the namespace (sockets it opens
    /// live there), and returns its result.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> io::Result<R> {
        let path = format!("/run/netns/{}", self.name);
        let file = fs::File::open(&path)?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a valid namespace fd; it only affects this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("thread in namespace panicked"))?
        })
    }

    /// Runs `f` on a new background thread inside the namespace.
    pub fn spawn<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> io::Result<std::thread::JoinHandle<io::Result<R>>> {
        let file = fs::File::open(format!("/run/netns/{}", self.name))?;
        Ok(std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd; it only affects this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        }))
    }

    /// Runs a future on a current-thread tokio runtime inside the namespace.
    pub fn block_on<F: std::future::Future + Send>(&self, fut: F) -> io::Result<F::Output>
    where
        F::Output: Send,
    {
        self.enter(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(fut))
        })?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only processes this test started can be in a namespace it created.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill(2) with a pid read from our own namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
