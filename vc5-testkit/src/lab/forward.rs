//! Ports on the host forwarded into a lab namespace (how `vc5-lab` shows each load
//! balancer's console).

use super::*;

impl Lab {
    /// Makes `target` inside a node's namespace reachable from the host at `local` (e.g.
    /// `127.0.0.1:8081`; port 0 picks a free one): a thread accepts on the host's side
    /// and, for each connection, a thread that has entered the namespace connects to
    /// `target` and copies both ways. Nothing is created on the host but the listening
    /// socket; dropping the [`Forward`] closes it and ends its connections.
    pub fn forward(&self, name: &str, target: SocketAddr, local: SocketAddr) -> Result<Forward> {
        let listener = std::net::TcpListener::bind(local)
            .with_context(|| format!("listening on {local} for {name}'s {target}"))?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let ns = Path::new(NETNS_DIR).join(self.ns(name));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("forward-{name}"))
            .spawn(move || accept_loop(listener, ns, target, stopping))?;
        Ok(Forward {
            local,
            stop,
            thread: Some(thread),
        })
    }

    /// [`Lab::forward`] for a load balancer's vc5d console (`127.0.0.1:8080` in its
    /// namespace, vc5d's default `--console`) to `127.0.0.1:<port>` on the host, falling
    /// back to a free port when `port` is taken. The URL is `Forward::url`.
    pub fn forward_console(&self, lb: &str, port: u16) -> Result<Forward> {
        let target = SocketAddr::from(([127, 0, 0, 1], 8080));
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        self.forward(lb, target, at(port))
            .or_else(|_| self.forward(lb, target, at(0)))
    }
}

/// A TCP port on the host forwarding into a lab namespace (see [`Lab::forward`]).
pub struct Forward {
    /// Where it listens on the host.
    pub local: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forward {
    /// `http://<local>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often the forwarding threads look at their stop flag.
const FORWARD_POLL: Duration = Duration::from_millis(100);

pub(super) fn accept_loop(
    listener: std::net::TcpListener,
    ns: PathBuf,
    target: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((outer, _)) => {
                let (ns, stop) = (ns.clone(), stop.clone());
                let _ = std::thread::Builder::new()
                    .name("forward-conn".into())
                    .spawn(move || {
                        if let Err(e) = forward_one(outer, &ns, target, &stop) {
                            tracing::debug!("forwarding to {target}: {e:#}");
                        }
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(FORWARD_POLL)
            }
            Err(_) => std::thread::sleep(FORWARD_POLL),
        }
    }
}

/// One forwarded connection: this thread enters the namespace (sockets belong to the
/// namespace they are created in, so only the connect needs it), then copies in both
/// directions until either side closes or the forward is dropped.
pub(super) fn forward_one(
    outer: TcpStream,
    ns: &Path,
    target: SocketAddr,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    outer.set_nonblocking(false)?;
    let f = File::open(ns).with_context(|| format!("{}", ns.display()))?;
    // SAFETY: setns(2) on a descriptor we own; it changes only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let inner = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    for s in [&outer, &inner] {
        s.set_read_timeout(Some(FORWARD_POLL))?;
        s.set_nodelay(true)?;
    }
    std::thread::scope(|sc| {
        let (o2, i2) = (outer.try_clone()?, inner.try_clone()?);
        sc.spawn(move || copy_until(i2, o2, stop));
        copy_until(outer.try_clone()?, inner.try_clone()?, stop);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// Copies `from` to `to` until EOF, an error or `stop`; then shuts both down so that the
/// other direction ends too.
pub(super) fn copy_until(
    mut from: TcpStream,
    mut to: TcpStream,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = from.shutdown(std::net::Shutdown::Read);
}
