//! The flow-sync group socket: one non-blocking UDP socket that joins the
//! group on `--interface` only, receives only what is sent to the group's
//! port on that interface, and sends there with TTL (hop limit) 1 and
//! without looping its own datagrams back.
//!
//! Linux defaults that matter here: a socket bound to a port receives
//! every group joined *anywhere on the host* on that port
//! (`IP_MULTICAST_ALL` = 1, turned off), multicast loops back to the
//! sender (turned off) and goes out of the interface the routing table
//! picks (set to `--interface`).

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `IPV6_MULTICAST_ALL` (linux/in6.h; not in libc for glibc targets).
const IPV6_MULTICAST_ALL: libc::c_int = 29;
/// Socket buffers asked for: a resync dump arrives at line rate.
const RCVBUF: libc::c_int = 8 << 20;
const SNDBUF: libc::c_int = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("unknown interface {0:?}")]
    NoInterface(String),
    #[error("--address {addr} is not an address of {ifname}")]
    NotOnInterface { addr: IpAddr, ifname: String },
    #[error("--address {addr} is not an address of this host")]
    NotLocal { addr: IpAddr },
    #[error("the group {group} and --address {addr} are of different IP versions")]
    Family { group: IpAddr, addr: IpAddr },
    #[error("{group} is not a multicast address")]
    NotMulticast { group: IpAddr },
    #[error("multicast socket on {ifname} for {group}: {what}: {source}")]
    Socket {
        ifname: String,
        group: SocketAddr,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The index of interface `ifname`, if it exists.
pub fn ifindex(ifname: &str) -> Option<u32> {
    let c = std::ffi::CString::new(ifname).ok()?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The addresses configured on interface `ifname`.
pub fn addresses(ifname: &str) -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() != ifname.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr of the family it names.
        match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
            _ => {}
        }
    }
    // SAFETY: the list getifaddrs allocated, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Whether `addr` is an address of this host: a socket can bind to it.
pub fn is_local(addr: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(addr, 0)).is_ok()
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: v points at a T of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            v as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the group socket: joined on `ifname`, bound to the group address
/// and port (so unicast to the port is not received) and to the device,
/// sending from `addr` (IPv4; IPv6 picks the interface's source address).
pub fn open(group: SocketAddr, ifname: &str, addr: IpAddr) -> Result<UdpSocket, NetError> {
    if !group.ip().is_multicast() {
        return Err(NetError::NotMulticast { group: group.ip() });
    }
    if group.is_ipv4() != addr.is_ipv4() {
        return Err(NetError::Family {
            group: group.ip(),
            addr,
        });
    }
    let index = ifindex(ifname).ok_or_else(|| NetError::NoInterface(ifname.to_owned()))?;
    // IPv4 sends from it (IP_MULTICAST_IF), and peers know us by it.
    match addresses(ifname) {
        Ok(a) if a.contains(&addr) => {}
        Ok(_) => {
            return Err(NetError::NotOnInterface {
                addr,
                ifname: ifname.to_owned(),
            });
        }
        // getifaddrs needs netlink, which a sandbox may deny
        // (RestrictAddressFamilies): then at least a local address.
        Err(_) if is_local(addr) => {}
        Err(_) => return Err(NetError::NotLocal { addr }),
    }
    let err = |what| {
        let ifname = ifname.to_owned();
        move |source| NetError::Socket {
            ifname,
            group,
            what,
            source,
        }
    };
    let domain = if group.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2).
    let raw = unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(err("socket")(io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = sock.as_raw_fd();
    let one: libc::c_int = 1;
    let zero: libc::c_int = 0;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one).map_err(err("SO_REUSEADDR"))?;
    // The device binding takes the name with its NUL.
    let mut name = [0u8; libc::IFNAMSIZ];
    let n = ifname.len().min(libc::IFNAMSIZ - 1);
    name[..n].copy_from_slice(&ifname.as_bytes()[..n]);
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &name)
        .map_err(err("SO_BINDTODEVICE"))?;
    // Bigger buffers: FORCE works for root (ignores rmem_max), else the
    // plain option gets what the sysctl allows.
    if setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF).is_err() {
        let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF);
    }
    if setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &SNDBUF).is_err() {
        let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &SNDBUF);
    }
    match (group, addr) {
        (SocketAddr::V4(g), IpAddr::V4(a)) => {
            let ga = libc::in_addr {
                s_addr: u32::from_ne_bytes(g.ip().octets()),
            };
            let la = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.octets()),
            };
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: g.port().to_be(),
                sin_addr: ga,
                sin_zero: [0; 8],
            };
            // SAFETY: a sockaddr_in of its size.
            let r = unsafe {
                libc::bind(
                    fd,
                    &sin as *const _ as *const libc::sockaddr,
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(err("bind")(io::Error::last_os_error()));
            }
            let mreq = libc::ip_mreqn {
                imr_multiaddr: ga,
                imr_address: la,
                imr_ifindex: index as libc::c_int,
            };
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)
                .map_err(err("IP_ADD_MEMBERSHIP"))?;
            let out = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: 0 },
                imr_address: la,
                imr_ifindex: index as libc::c_int,
            };
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &out)
                .map_err(err("IP_MULTICAST_IF"))?;
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &one)
                .map_err(err("IP_MULTICAST_TTL"))?;
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &zero)
                .map_err(err("IP_MULTICAST_LOOP"))?;
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_ALL, &zero)
                .map_err(err("IP_MULTICAST_ALL"))?;
        }
        (SocketAddr::V6(g), IpAddr::V6(_)) => {
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &one)
                .map_err(err("IPV6_V6ONLY"))?;
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: g.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: g.ip().octets(),
                },
                sin6_scope_id: index,
            };
            // SAFETY: a sockaddr_in6 of its size.
            let r = unsafe {
                libc::bind(
                    fd,
                    &sin6 as *const _ as *const libc::sockaddr,
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(err("bind")(io::Error::last_os_error()));
            }
            let mreq = libc::ipv6_mreq {
                ipv6mr_multiaddr: libc::in6_addr {
                    s6_addr: g.ip().octets(),
                },
                ipv6mr_interface: index,
            };
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)
                .map_err(err("IPV6_ADD_MEMBERSHIP"))?;
            let ifi = index as libc::c_int;
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &ifi)
                .map_err(err("IPV6_MULTICAST_IF"))?;
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &one)
                .map_err(err("IPV6_MULTICAST_HOPS"))?;
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &zero)
                .map_err(err("IPV6_MULTICAST_LOOP"))?;
            setsockopt(fd, libc::IPPROTO_IPV6, IPV6_MULTICAST_ALL, &zero)
                .map_err(err("IPV6_MULTICAST_ALL"))?;
        }
        _ => unreachable!("families checked above"),
    }
    Ok(UdpSocket::from(sock))
}

/// Where datagrams for the group are sent: the group, with the
/// interface's scope for an IPv6 link-local group.
pub fn destination(group: SocketAddr, ifname: &str) -> SocketAddr {
    match group {
        SocketAddr::V6(mut g) => {
            if let Some(i) = ifindex(ifname) {
                g.set_scope_id(i);
            }
            SocketAddr::V6(g)
        }
        g => g,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_input_before_any_socket() {
        let g: SocketAddr = "10.0.0.1:9999".parse().unwrap();
        assert!(matches!(
            open(g, "lo", "127.0.0.1".parse().unwrap()),
            Err(NetError::NotMulticast { .. })
        ));
        let g: SocketAddr = "239.1.2.3:9999".parse().unwrap();
        assert!(matches!(
            open(g, "lo", "::1".parse().unwrap()),
            Err(NetError::Family { .. })
        ));
        assert!(matches!(
            open(g, "vc5-no-such-if", "127.0.0.1".parse().unwrap()),
            Err(NetError::NoInterface(_))
        ));
        assert_eq!(ifindex("vc5-no-such-if"), None);
        assert!(ifindex("lo").is_some());
        assert!(
            addresses("lo")
                .unwrap()
                .contains(&"127.0.0.1".parse().unwrap())
        );
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(!is_local("192.0.2.1".parse().unwrap()));
        assert!(matches!(
            open(g, "lo", "192.0.2.1".parse().unwrap()),
            Err(NetError::NotOnInterface { .. })
        ));
    }
}
