//! Processes in lab namespaces: [`LabChild`], killed and reaped when dropped.

use super::*;

/// A process started in a lab namespace. Killed (SIGKILL) and reaped when dropped; use
/// [`LabChild::terminate`] for a graceful stop. Derefs to [`std::process::Child`].
#[derive(Debug)]
pub struct LabChild {
    child: Child,
    /// Where its stdout and stderr go, if to a file.
    pub log: Option<PathBuf>,
    /// The lab node it runs in, when the lab knows (vc5d: its load balancer).
    pub node: Option<String>,
}

impl LabChild {
    /// Wraps a spawned child so that it cannot outlive its owner.
    pub fn new(child: Child, log: Option<PathBuf>) -> Self {
        LabChild {
            child,
            log,
            node: None,
        }
    }

    /// Records the lab node it runs in.
    pub fn in_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) unless the process has already been reaped.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            bail!("process {} has already exited", self.child.id());
        }
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) has no memory effects; the pid is our unreaped child, so it
        // cannot have been reused by another process.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`; returns how it ended.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// The log's content so far (empty if there is none yet).
    pub fn log_text(&self) -> String {
        self.log
            .as_deref()
            .and_then(|p| fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl std::ops::Deref for LabChild {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for LabChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
