//! A network namespace held by a thread: where checks through the VIP run.
//!
//! [`Netns::new`] starts a thread that leaves the process's network
//! namespace for a new one (`unshare(CLONE_NEWNET)`, which needs
//! `CAP_SYS_ADMIN`), brings its loopback up, and then runs what it is sent
//! ([`Netns::run`]). A socket belongs for good to the namespace it was made
//! in, so [`Netns::socket`] is all a check needs: the socket is then driven
//! from any thread. Nothing is bind-mounted: the namespace lives exactly as
//! long as the thread (and the sockets made in it), and the thread ends
//! when the last handle is dropped. A process that dies, however it dies,
//! leaves no namespace behind.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

struct Inner {
    /// None once dropping: closing the channel ends the thread.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// `/proc/thread-self/ns/net` of the namespace, and of the one the
    /// thread left (the process's).
    ns: File,
    host: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.jobs.lock().map(|mut j| j.take()).ok();
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// A handle on the namespace; clones share it. Equal (and hashed) by
/// identity: two handles are equal when they are the same namespace.
#[derive(Clone)]
pub struct Netns(Arc<Inner>);

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Netns({:p})", Arc::as_ptr(&self.0))
    }
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Netns {}

impl std::hash::Hash for Netns {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state)
    }
}

/// The thread's name, as `ps -L` and `/proc/PID/task/*/comm` show it.
pub const THREAD_NAME: &str = "vc5-probe-ns";

impl Netns {
    /// A new network namespace with its loopback up, held by a thread.
    pub fn new() -> io::Result<Netns> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<(File, File)>>();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let setup = || -> io::Result<(File, File)> {
                    let host = File::open("/proc/thread-self/ns/net")?;
                    // SAFETY: unshare only changes this thread's namespaces.
                    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    loopback_up()?;
                    let ns = File::open("/proc/thread-self/ns/net")?;
                    Ok((ns, host))
                };
                let r = setup();
                let ok = r.is_ok();
                let _ = ready_tx.send(r);
                if ok {
                    for job in rx {
                        job();
                    }
                }
            })?;
        let (ns, host) = match ready_rx.recv() {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::other("the namespace's thread died")),
        };
        Ok(Netns(Arc::new(Inner {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            ns,
            host,
        })))
    }

    /// Runs `f` on the namespace's thread, inside the namespace, and
    /// returns what it returns. Blocks meanwhile (jobs are short: making a
    /// socket, configuring an interface).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let jobs = self
            .0
            .jobs
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        jobs.as_ref()
            .ok_or_else(|| io::Error::other("the namespace is closing"))?
            .send(job)
            .map_err(|_| io::Error::other("the namespace's thread has ended"))?;
        drop(jobs);
        rx.recv()
            .map_err(|_| io::Error::other("the namespace's thread dropped the job"))
    }

    /// A socket of the namespace (close-on-exec, non-blocking).
    pub fn socket(
        &self,
        domain: libc::c_int,
        ty: libc::c_int,
        protocol: libc::c_int,
    ) -> io::Result<OwnedFd> {
        self.run(move || {
            // SAFETY: plain socket(2); the descriptor is owned at once.
            let fd = unsafe {
                libc::socket(
                    domain,
                    ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    protocol,
                )
            };
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                // SAFETY: a fresh descriptor nothing else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        })?
    }

    /// The namespace (`/proc/…/ns/net`), e.g. for `IFLA_NET_NS_FD`.
    pub fn ns_fd(&self) -> BorrowedFd<'_> {
        self.0.ns.as_fd()
    }

    /// The namespace the thread left: the process's own.
    pub fn host_ns(&self) -> BorrowedFd<'_> {
        self.0.host.as_fd()
    }
}

/// Sets `lo` up in the calling thread's namespace (SIOCSIFFLAGS).
fn loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket only for the ioctls, closed on return.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is fresh and ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed ifreq with the name set; the kernel fills the flags.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn root() -> bool {
        // SAFETY: getuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// Sockets made through the handle are in the new namespace: a
    /// listener there is reachable from its sockets and not from the
    /// process's own; the thread ends with the last handle.
    #[test]
    fn sockets_live_in_the_namespace_and_it_goes_with_the_last_handle() {
        if !root() {
            eprintln!("skipped: needs root");
            return;
        }
        let ns = Netns::new().expect("a network namespace (root)");
        let listener = ns
            .run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .unwrap()
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let fd = ns.socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
        // SAFETY: a TCP socket we own, made blocking for the std API.
        let stream = unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, 0);
            socket2_connect(fd, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        };
        let mut stream = stream.expect("connect inside the namespace");
        let (mut peer, _) = listener.accept().unwrap();
        stream.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        // The process's own loopback has no such listener (the port is
        // the namespace's; a listener there on it would be a coincidence
        // we rule out by binding it ourselves).
        if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            drop(l);
            assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
        }
        // Different namespaces, different inodes.
        let ino = |f: BorrowedFd| {
            // SAFETY: a plain C struct, all zeros valid.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat of a live descriptor into a local.
            assert_eq!(unsafe { libc::fstat(f.as_raw_fd(), &mut st) }, 0);
            st.st_ino
        };
        assert_ne!(ino(ns.ns_fd()), ino(ns.host_ns()));
        assert_eq!(ns.clone(), ns);
        assert_ne!(Netns::new().unwrap(), ns);

        drop((stream, peer, listener));
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == THREAD_NAME)
                })
                .count()
        };
        let before = threads();
        assert!(before >= 1);
        drop(ns);
        assert_eq!(threads(), before - 1, "the last handle ended its thread");
    }

    /// A blocking connect of an owned socket, as std has no from-fd connect.
    unsafe fn socket2_connect(fd: OwnedFd, to: SocketAddr) -> io::Result<TcpStream> {
        let SocketAddr::V4(v4) = to else {
            unreachable!()
        };
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid sockaddr_in of its size.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&raw const sa).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TcpStream::from(fd))
    }
}
