//! Helpers shared by the data plane's tests and benchmarks (moved here from
//! `vc5-xdp`): a private bpffs mount
//! (removed on drop, which also detaches anything pinned in it) and
//! builders for the frames the packet tests send.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static N: AtomicUsize = AtomicUsize::new(0);

/// A bpffs mounted on a fresh directory under /tmp; unmounted and
/// removed on drop. Needs root.
pub struct TempBpffs {
    dir: PathBuf,
}

impl TempBpffs {
    pub fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "vc5-bpffs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
        let target = c(dir.to_str().expect("utf-8 temp dir"));
        let (src, fstype) = (c("bpf"), c("bpf"));
        // SAFETY: valid C strings; no data argument.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(TempBpffs { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TempBpffs {
    fn drop(&mut self) {
        if let Ok(c) = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid C string. MNT_DETACH: pins held open elsewhere
            // must not keep the mount (and this test) hanging.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

pub use crate::require_root;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The Ethernet addresses frames are built with.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Builds Ethernet frames, IPv4/IPv6, TCP/UDP/ICMP, with correct lengths
/// and checksums where the program or a kernel could care.
#[derive(Debug, Clone)]
pub struct Frame {
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub payload: Vec<u8>,
    /// IPv4 options (a multiple of 4 bytes).
    pub ip_options: Vec<u8>,
    /// IPv4 flags+fragment offset field (host order).
    pub frag: u16,
    /// IPv6 extension headers to insert: (next-header code, bytes incl. its
    /// 2-byte head); the next-header bytes are filled in.
    pub v6_ext: Vec<(u8, Vec<u8>)>,
}

impl Frame {
    pub fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> Self {
        Frame {
            vlan: None,
            src,
            dst,
            proto: 6,
            sport,
            dport,
            tcp_flags: flags,
            payload: Vec::new(),
            ip_options: Vec::new(),
            frag: 0x4000, // DF
            v6_ext: Vec::new(),
        }
    }

    pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Self {
        Frame {
            proto: 17,
            tcp_flags: 0,
            ..Frame::tcp(src, sport, dst, dport, 0)
        }
    }

    fn l4(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == 6 {
            l4.extend_from_slice(&1u32.to_be_bytes()); // seq
            l4.extend_from_slice(&0u32.to_be_bytes()); // ack
            l4.push(5 << 4);
            l4.push(self.tcp_flags);
            l4.extend_from_slice(&65535u16.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 0]); // csum, urg
        } else {
            l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(&self.payload);
        l4
    }

    /// The IP packet (no Ethernet header).
    pub fn ip(&self) -> Vec<u8> {
        ip_packet(
            self.src,
            self.dst,
            self.proto,
            &self.l4(),
            &self.ip_options,
            self.frag,
            &self.v6_ext,
        )
    }

    /// The whole Ethernet frame, client to load balancer.
    pub fn build(&self) -> Vec<u8> {
        let ethertype = if self.src.is_ipv4() {
            0x0800u16
        } else {
            0x86dd
        };
        ether(LB_MAC, CLIENT_MAC, self.vlan, ethertype, &self.ip())
    }
}

/// An Ethernet frame around `payload`.
pub fn ether(
    dst: [u8; 6],
    src: [u8; 6],
    vlan: Option<u16>,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(tci) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The 16-bit big-endian words of `data` summed (an odd last byte padded
/// with zero), unfolded: the tests' own Internet checksum arithmetic, apart
/// from the code under test.
pub fn ones_sum(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// `s` folded to 16 bits in one's complement (not inverted: the
/// checksum field is its complement).
pub fn ones_fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn csum(data: &[u8]) -> u16 {
    !ones_fold(ones_sum(data))
}

/// An IPv4 or IPv6 packet carrying `l4`.
pub fn ip_packet(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    l4: &[u8],
    options: &[u8],
    frag: u16,
    v6_ext: &[(u8, Vec<u8>)],
) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ihl = 20 + options.len();
            let mut h = vec![0u8; 20];
            h[0] = 0x40 | (ihl / 4) as u8;
            h[2..4].copy_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
            h[6..8].copy_from_slice(&frag.to_be_bytes());
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            h.extend_from_slice(options);
            let c = csum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend_from_slice(l4);
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ext = Vec::new();
            let mut first = proto;
            for (i, (code, bytes)) in v6_ext.iter().enumerate() {
                if i == 0 {
                    first = *code;
                }
                let mut b = bytes.clone();
                b[0] = v6_ext.get(i + 1).map(|e| e.0).unwrap_or(proto);
                ext.extend_from_slice(&b);
            }
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
            h[6] = first;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            h.extend_from_slice(&ext);
            h.extend_from_slice(l4);
            h
        }
        _ => panic!("mixed address families"),
    }
}

/// An ICMP "fragmentation needed" (or ICMPv6 "packet too big") from
/// `router` to `vip`, quoting `quoted` (an IP packet the real sent).
pub fn icmp_too_big(router: IpAddr, vip: IpAddr, quoted: &[u8]) -> Vec<u8> {
    let v4 = router.is_ipv4();
    let mut icmp = if v4 {
        vec![3, 4, 0, 0, 0, 0, 0x05, 0xdc]
    } else {
        vec![2, 0, 0, 0, 0, 0, 0x05, 0x00]
    };
    icmp.extend_from_slice(&quoted[..quoted.len().min(if v4 { 28 } else { 48 })]);
    let proto = if v4 { 1 } else { 58 };
    let ip = ip_packet(router, vip, proto, &icmp, &[], 0, &[]);
    ether(
        LB_MAC,
        CLIENT_MAC,
        None,
        if v4 { 0x0800 } else { 0x86dd },
        &ip,
    )
}

/// Pins the calling thread to one CPU. BPF_PROG_TEST_RUN runs an XDP
/// program on the calling CPU (the kernel's BPF_F_TEST_RUN_ON_CPU is for
/// raw tracepoints only), so this is how a test meets a given CPU's
/// per-CPU maps, the flow caches among them.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs `dp`'s program once on `input` with BPF_PROG_TEST_RUN: its verdict
/// and the frame it leaves (room for 256 bytes of growth: encapsulation,
/// tags, ICMP answers). Panics if the kernel refuses the run.
pub fn test_run(dp: &mut vc5_xdp::DataPlane, input: &[u8]) -> (u32, Vec<u8>) {
    run_prog(dp.xdp().expect("the XDP program"), input)
}

/// [`test_run`] with another program of the object (`vc5_probe`, say).
pub fn test_run_named(dp: &mut vc5_xdp::DataPlane, name: &str, input: &[u8]) -> (u32, Vec<u8>) {
    run_prog(dp.xdp_named(name).expect("the XDP program"), input)
}

fn run_prog(prog: &mut aya::programs::Xdp, input: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; input.len() + 256];
    use aya::programs::TestRun;
    let mut opts = aya::programs::TestRunOptions::new();
    opts.data_in = Some(input);
    opts.data_out = Some(&mut out);
    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}
