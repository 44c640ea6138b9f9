//! Running one check once: connect, ask, judge, all within the check's timeout.
//!
//! A [`Prober`] is a [`CheckSpec`] prepared for running: the HTTP request is
//! formatted, the TLS client configured and the DNS query encoded once, when the
//! check is added, so that each run only does I/O. [`Prober::run`] never returns an
//! error: whatever happens becomes an [`Outcome`], and the whole run, connection
//! included, is bounded by the check's timeout, so a server that hangs, trickles or
//! never answers costs one timeout and nothing more.

mod dns;
mod http;
mod tls;

#[cfg(test)]
mod fuzz;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::outcome::{Failure, Outcome, Phase};
use crate::spec::{CheckKind, CheckSpec, SpecError};

/// A check ready to run.
#[derive(Debug, Clone)]
pub struct Prober {
    spec: Arc<CheckSpec>,
    how: How,
}

#[derive(Debug, Clone)]
enum How {
    Tcp,
    Http(http::Request),
    Https(http::Request, tls::Client),
    Dns(dns::Query),
}

impl Prober {
    /// Prepares `spec` for running; fails if it cannot be run as written.
    pub fn new(spec: Arc<CheckSpec>) -> Result<Prober, SpecError> {
        spec.validate()?;
        let how = match &spec.kind {
            CheckKind::Tcp => How::Tcp,
            CheckKind::Http(check) => How::Http(http::Request::new(check, spec.target, false)),
            CheckKind::Https {
                http: check,
                verify,
            } => How::Https(
                http::Request::new(check, spec.target, true),
                tls::Client::new(verify, check.host.as_deref(), spec.target)?,
            ),
            CheckKind::Dns(check) => How::Dns(dns::Query::new(check)?),
        };
        Ok(Prober { spec, how })
    }

    /// The check this runs.
    pub fn spec(&self) -> &Arc<CheckSpec> {
        &self.spec
    }

    /// Runs the check once.
    pub async fn run(&self) -> Outcome {
        let started = Instant::now();
        // The phase lives outside the timed future so that it can still be read
        // after the timeout has dropped that future. An atomic rather than a Cell
        // because the future must be Send to run on a multi-threaded runtime.
        let phase = AtomicU8::new(Phase::Connecting.as_u8());
        let result = match tokio::time::timeout(self.spec.timeout, self.attempt(&phase)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Failure::Timeout {
                after: self.spec.timeout,
                phase: Phase::from_u8(phase.load(Ordering::Relaxed)),
            }),
        };
        Outcome::new(result, started.elapsed())
    }

    async fn attempt(&self, phase: &AtomicU8) -> Result<(), Failure> {
        let spec = &self.spec;
        match &self.how {
            How::Tcp => connect(spec).await.map(drop),
            How::Http(request) => {
                let mut stream = connect(spec).await?;
                phase.store(Phase::Waiting.as_u8(), Ordering::Relaxed);
                request.exchange(&mut stream).await
            }
            How::Https(request, client) => {
                let stream = connect(spec).await?;
                phase.store(Phase::Handshake.as_u8(), Ordering::Relaxed);
                let mut stream = client.handshake(stream).await?;
                phase.store(Phase::Waiting.as_u8(), Ordering::Relaxed);
                request.exchange(&mut stream).await
            }
            How::Dns(query) => query.ask(spec, phase).await,
        }
    }
}

/// Opens a TCP connection to the spec's target, from its source address if any.
pub(crate) async fn connect(spec: &CheckSpec) -> Result<TcpStream, Failure> {
    let target = spec.target;
    if let Some(ns) = &spec.netns {
        let socket = netns_socket(spec, ns, libc::SOCK_STREAM)?;
        let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
        // Closing sends RST and leaves no TIME_WAIT, which would hold each
        // probe's distinct port (see netns_socket) for a minute.
        socket.set_zero_linger().map_err(|e| Failure::from_io(&e))?;
        let stream = socket
            .connect(target)
            .await
            .map_err(|e| Failure::from_io(&e))?;
        stream.set_nodelay(true).map_err(|e| Failure::from_io(&e))?;
        return Ok(stream);
    }
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| Failure::from_io(&e))?;
    if let Some(source) = spec.bind_source() {
        bind_address_no_port(&socket);
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| Failure::Bind {
                addr: source,
                reason: e.to_string(),
            })?;
    }
    let stream = socket
        .connect(target)
        .await
        .map_err(|e| Failure::from_io(&e))?;
    // Requests are one small write; without this the kernel may hold it back
    // waiting for an ACK that a delayed-ACK peer sends only after 40 ms.
    stream.set_nodelay(true).map_err(|e| Failure::from_io(&e))?;
    Ok(stream)
}

/// A socket of type `ty` made in the spec's namespace `ns`, bound to its
/// source (or the unspecified address of the target's family) and port 0
/// at once, without `IP_BIND_ADDRESS_NO_PORT`: so every live socket of the
/// namespace has a local port of its own, which is how vc5's data plane
/// tells the answers of probes through the VIP apart (their NAT addresses
/// are gone by then: the answers all come from VIP:port to this host).
pub(crate) fn netns_socket(
    spec: &CheckSpec,
    ns: &crate::Netns,
    ty: libc::c_int,
) -> Result<std::os::fd::OwnedFd, Failure> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let v4 = spec.target.is_ipv4();
    let domain = if v4 { libc::AF_INET } else { libc::AF_INET6 };
    let fd = ns.socket(domain, ty, 0).map_err(|e| Failure::from_io(&e))?;
    let local = spec.bind_source().unwrap_or(if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    });
    bind(&fd, SocketAddr::new(local, 0)).map_err(|e| Failure::Bind {
        addr: local,
        reason: e.to_string(),
    })?;
    Ok(fd)
}

/// bind(2) of a raw socket (std and tokio bind only sockets they make).
fn bind(fd: &std::os::fd::OwnedFd, addr: SocketAddr) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: zeroed sockaddr storage filled for the address's family and
    // passed with its length; the descriptor is live.
    let r = unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            SocketAddr::V4(a) => {
                let sa = &mut *(&raw mut ss).cast::<libc::sockaddr_in>();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = a.port().to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sa = &mut *(&raw mut ss).cast::<libc::sockaddr_in6>();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr.s6_addr = a.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        libc::bind(
            fd.as_raw_fd(),
            (&raw const ss).cast(),
            len as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Asks the kernel to choose the source port at `connect` rather than at `bind`.
///
/// Binding a source address with port 0 otherwise reserves an ephemeral port for
/// the address alone, so every check from `--address` would draw from one pool of
/// about 28,000 ports, TIME_WAIT included; 1,000 checks every 2 s that close first
/// would exhaust it within a minute. Chosen at `connect`, the port only has to be
/// unique per destination. Failure is harmless (old kernels), so it is ignored.
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the descriptor is a live socket owned by `socket`, and the option
    // value is a c_int of the size passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn source_port_is_left_to_connect() {
        let socket = TcpSocket::new_v4().unwrap();
        bind_address_no_port(&socket);
        socket.bind("127.0.0.4:0".parse().unwrap()).unwrap();
        // Without the option the kernel would have reserved a port already.
        assert_eq!(socket.local_addr().unwrap().port(), 0);
        // The option is an IP-level one but applies to IPv6 sockets as well.
        let socket = TcpSocket::new_v6().unwrap();
        bind_address_no_port(&socket);
        socket.bind("[::1]:0".parse().unwrap()).unwrap();
        assert_eq!(socket.local_addr().unwrap().port(), 0);
    }
}
