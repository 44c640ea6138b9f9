//! Helpers of the lab and of its users: finding programs, running and spawning
//! commands, compiling BPF, retrying, a minimal HTTP GET, the topology's address plan.

use super::*;

pub(super) fn require_root() -> Result<()> {
    // SAFETY: geteuid(2) cannot fail and has no memory effects.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "the vc5 lab needs root (namespaces, veths, bpffs)"
    );
    Ok(())
}

pub(super) fn lab_dir(pid: u32, n: u32) -> PathBuf {
    PathBuf::from(format!("/run/vc5-lab-{pid}-{n}"))
}

/// `<pid>-<n>` followed by nothing or `-<anything>`.
pub(super) fn parse_id(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let n = parts.next()?.parse().ok()?;
    Some((pid, n))
}

pub(super) fn node(id: &str, name: &str, kind: Kind, host: u8) -> Node {
    Node {
        name: name.to_string(),
        ns: format!("{id}-{name}"),
        kind,
        host,
    }
}

pub(super) fn client_net4(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, host)
}

pub(super) fn client_net6(host: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, hex_like(host))
}

pub(super) fn remote_net4(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 3, 0, host)
}

pub(super) fn remote_net6(host: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, hex_like(host))
}

/// A VLAN real's VLAN: odd hosts (`vreal1` is 41) on 10, even ones on 20.
pub(super) fn vlan_of_host(host: u8) -> u16 {
    if host % 2 == 1 { 10 } else { 20 }
}

/// `10.10.0.H` on VLAN 10, `10.20.0.H` on 20.
pub(super) fn vlan_net4(vlan: u16, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, vlan as u8, 0, host)
}

/// `2001:db8:10::H` on VLAN 10 (H written in hex like the decimal host).
pub(super) fn vlan_net6(vlan: u16, host: u8) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        hex_like(vlan as u8),
        0,
        0,
        0,
        0,
        hex_like(host),
    )
}

pub(super) fn vlan_mac(vlan: u16, host: u8) -> [u8; 6] {
    [0x02, 0xc5, 0, vlan as u8, 0, host]
}

pub(super) fn remote_mac(host: u8) -> [u8; 6] {
    [0x02, 0xc5, 0, 3, 0, host]
}

pub(super) fn lan_mac(host: u8) -> [u8; 6] {
    [0x02, 0xc5, 0, 2, 0, host]
}

pub(super) fn client_net_mac(host: u8) -> [u8; 6] {
    [0x02, 0xc5, 0, 1, 0, host]
}

/// 21 → 0x21, so that `203.0.113.21` is `2001:db8:2::21`.
pub(super) fn hex_like(host: u8) -> u16 {
    u16::from_str_radix(&host.to_string(), 16).expect("decimal digits are hex digits")
}

/// Lines that make a bridge in the switch, without STP or multicast snooping.
pub(super) fn bridge(name: &str) -> String {
    format!("ip link add {name} type bridge stp_state 0 mcast_snooping 0\nip link set {name} up\n")
}

/// Lines that make a veth pair in the switch: `port` on bridge `br` (TX offload off, see
/// the module docs), its peer `peer` with `mac` in namespace `ns` (else beside it).
pub(super) fn bridge_port(
    port: &str,
    peer: &str,
    mac: Option<[u8; 6]>,
    ns: Option<&str>,
    br: &str,
) -> String {
    let mac = mac.map_or(String::new(), |m| {
        format!(" address {}", vc5_xdp::netlink::format_mac(&m))
    });
    let ns = ns.map_or(String::new(), |n| format!(" netns {n}"));
    format!(
        "ip link add {port} type veth peer name {peer}{mac}{ns}\n\
         ip link set {port} master {br} up\nethtool -K {port} tx off >/dev/null\n"
    )
}

/// Lines that configure one interface: TX checksum offload off (see the module docs),
/// addresses (IPv6 without DAD), up.
pub(super) fn iface(dev: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> String {
    let len6 = 64;
    format!(
        "ethtool -K {dev} tx off >/dev/null\n\
         ip addr add {v4}/24 dev {dev}\n\
         ip -6 addr add {v6}/{len6} dev {dev} nodad\n\
         ip link set {dev} up\n"
    )
}

pub(super) fn find_program(candidates: &[&str]) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.is_file() {
                return Ok(p.to_path_buf());
            }
            continue;
        }
        for dir in std::env::split_paths(&path) {
            let full = dir.join(c);
            let executable = fs::metadata(&full).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
            if executable {
                return Ok(full);
            }
        }
    }
    bail!("none of {candidates:?} found")
}

/// Debian's python3 first: a version manager's shim (pyenv) adds a shell script and a
/// noticeable delay to every start, and is not what lab/deps installs.
pub(super) fn python() -> Result<PathBuf> {
    find_program(&["/usr/bin/python3", "python3"]).context("python3 is missing: run lab/deps")
}

pub(super) fn run_cmd(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(super) fn spawn_logged(mut cmd: Command, log: &Path) -> Result<LabChild> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let child = cmd
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    Ok(LabChild::new(child, Some(log.to_path_buf())))
}

/// Compiles a BPF C source with clang into `out`.
pub fn compile_bpf(source: &str, out: &Path) -> Result<()> {
    compile_bpf_with(source, out, &[])
}

/// [`compile_bpf`] with extra clang arguments (e.g. `-DNAME=VALUE`).
pub fn compile_bpf_with(source: &str, out: &Path, extra: &[String]) -> Result<()> {
    let clang = find_program(&["clang-19", "clang"]).context("clang is missing: run lab/deps")?;
    let src = out.with_extension("c");
    fs::write(&src, source)?;
    let mut cmd = Command::new(clang);
    cmd.args([
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-I/usr/include/x86_64-linux-gnu",
    ])
    .args(extra)
    .arg("-c")
    .arg(&src)
    .arg("-o")
    .arg(out);
    run_cmd(&mut cmd)?;
    Ok(())
}

/// Replaces the value of `define NAME = …;` in a BIRD configuration.
pub(super) fn define(conf: &str, name: &str, value: &str) -> String {
    conf.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with(&format!("define {name} "))
                || t.starts_with(&format!("define {name}="))
            {
                format!("define {name} = {value};\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// Calls `f` until it succeeds or `timeout` has passed (then returns its last error),
/// pausing 100 ms between calls.
pub fn retry<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A minimal HTTP/1.0 GET over a new TCP connection from the calling thread's network
/// namespace (see [`Lab::run_in`]); the body of a 200 answer, or an error. Cheaper than
/// curl when a test or the demo makes hundreds of requests.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("{addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).with_context(|| format!("{addr}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    ensure!(status == "200", "{addr}{path}: HTTP status {status}");
    Ok(body.to_string())
}
