//! The lab's own tests: it builds, routes, balances and cleans up.

use super::*;

fn lab() -> Lab {
    crate::require_root();
    Lab::new(LabOptions::default()).expect("building the lab")
}

/// `real=… client=… vip=…` as a map.
fn fields(body: &str) -> std::collections::HashMap<String, String> {
    body.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn assert_answers(lab: &Lab, real: &str) {
    for (vip, client) in [
        (IpAddr::from(lab.vip4), IpAddr::from(lab.addr4("client"))),
        (lab.vip6.into(), lab.addr6("client").into()),
    ] {
        let body = lab.curl("client", &Lab::url(vip, "/"), &[]).unwrap();
        let f = fields(&body);
        assert_eq!(f["real"], real, "{vip}: {body}");
        assert_eq!(f["client"], client.to_string(), "{vip}: {body}");
        assert_eq!(f["vip"], vip.to_string(), "{vip}: {body}");
    }
}

#[test]
fn lab_routes_to_a_real_directly() {
    let lab = lab();
    lab.route_vips_via("real1").unwrap();
    assert_answers(&lab, "real1");

    // The in-process client sees the same, and large answers arrive whole.
    let vip6 = SocketAddr::new(lab.vip6.into(), HTTP_PORT);
    let got = lab.run_in("client", || {
        http_get(vip6, "/bytes/1000000", Duration::from_secs(5))
    });
    assert_eq!(got.unwrap().unwrap().len(), 1_000_000);

    // Without a route to a real, nothing on the LAN answers for the VIP: lb1 (with no
    // XDP program) must not, or tests of the load balancer would prove nothing.
    lab.route_vips_via("lb1").unwrap();
    let url = Lab::url(lab.vip4.into(), "/");
    assert!(lab.curl("client", &url, &["--max-time", "1"]).is_err());

    let log = fs::read_to_string(lab.httpd_log("real1")).unwrap();
    assert!(log.contains("GET / "), "httpd log: {log}");
}

#[test]
fn lab_drop_removes_everything() {
    let lab = lab();
    let namespaces: Vec<String> = lab.names().iter().map(|n| lab.ns(n)).collect();
    let dir = lab.dir().to_path_buf();
    let bpffs = lab.bpffs("lb1");
    let mounted = || fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(mounted().contains(&format!(" {} bpf ", bpffs.display())));
    // A process the caller forgot about must not keep a namespace alive.
    let stray = lab.spawn("real2", &["sleep", "600"]).unwrap();
    let stray_pid = stray.id();
    std::mem::forget(stray);

    drop(lab);

    for ns in &namespaces {
        assert!(!Path::new(NETNS_DIR).join(ns).exists(), "{ns} still exists");
    }
    assert!(
        !mounted().contains(&dir.display().to_string()),
        "bpffs still mounted"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    let mut status = 0;
    // SAFETY: reaping our own child; status is a valid out-pointer.
    let reaped = unsafe { libc::waitpid(stray_pid as libc::pid_t, &mut status, 0) };
    assert_eq!(reaped, stray_pid as libc::pid_t);
    assert!(libc::WIFSIGNALED(status), "stray process was not killed");
}

#[test]
fn lab_with_two_load_balancers_spreads_over_reals_by_ecmp() {
    crate::require_root();
    let lab = Lab::new(LabOptions {
        load_balancers: 2,
        ..LabOptions::default()
    })
    .unwrap();
    assert_eq!(lab.load_balancers(), ["lb1", "lb2"]);
    assert_eq!(lab.addr6("lb2").to_string(), "2001:db8:2::12");
    assert!(lab.bpffs("lb2").is_dir());
    let reals = lab.reals();
    let reals: Vec<&str> = reals.iter().map(String::as_str).collect();
    lab.route_vips_ecmp(&reals).unwrap();
    let vip = SocketAddr::new(lab.vip4.into(), HTTP_PORT);
    let seen: HashSet<String> = lab
        .run_in("client", || {
            (0..60)
                .map(|_| {
                    fields(&http_get(vip, "/", Duration::from_secs(2)).unwrap())["real"].clone()
                })
                .collect()
        })
        .unwrap();
    assert_eq!(seen.len(), 3, "60 flows hashed onto {seen:?} only");
}

/// An XDP program that does what vc5's does for one real: frames for a VIP get the
/// real's MAC as destination and go back out of the interface they came in on.
const TO_REAL_C: &str = r#"
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int to_real(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	unsigned char real[ETH_ALEN] = { REAL_MAC };

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->daddr != VIP4)
			return XDP_PASS;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end || ip6->daddr.in6_u.u6_addr32[0] != VIP6_0 ||
		    ip6->daddr.in6_u.u6_addr32[1] != VIP6_1 ||
		    ip6->daddr.in6_u.u6_addr32[2] != VIP6_2 ||
		    ip6->daddr.in6_u.u6_addr32[3] != VIP6_3)
			return XDP_PASS;
	} else {
		return XDP_PASS;
	}
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, real, ETH_ALEN);
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
"#;

/// Attaches `TO_REAL_C` (sending VIP traffic to real2) to lb1 in `mode` and checks that
/// the client's requests, and a large answer, get through.
fn xdp_tx_reaches_a_real(mode: &str) {
    let lab = lab();
    if mode == "xdpdrv" {
        lab.prepare_native_xdp().unwrap();
        assert_eq!(
            lab.xdp_mode("switch", "lb1").unwrap().as_deref(),
            Some("xdp")
        );
    }
    let word = |b: &[u8]| format!("{:#x}", u32::from_ne_bytes(b.try_into().unwrap()));
    let mac = lab.mac("real2").map(|b| format!("{b:#x}")).join(",");
    let v6 = lab.vip6.octets();
    let defs = vec![
        format!("-DREAL_MAC={mac}"),
        format!("-DVIP4={}", word(&lab.vip4.octets())),
        format!("-DVIP6_0={}", word(&v6[0..4])),
        format!("-DVIP6_1={}", word(&v6[4..8])),
        format!("-DVIP6_2={}", word(&v6[8..12])),
        format!("-DVIP6_3={}", word(&v6[12..16])),
    ];
    let obj = lab.dir().join("to-real.o");
    compile_bpf_with(TO_REAL_C, &obj, &defs).unwrap();
    let obj = obj.to_str().unwrap();
    lab.run(
        "lb1",
        &[
            "ip", "link", "set", "dev", "eth0", mode, "obj", obj, "sec", "xdp",
        ],
    )
    .unwrap();
    let want = if mode == "xdpdrv" {
        "xdp"
    } else {
        "xdpgeneric"
    };
    assert_eq!(lab.xdp_mode("lb1", "eth0").unwrap().as_deref(), Some(want));

    assert_answers(&lab, "real2");
    for vip in lab.vips() {
        let url = Lab::url(vip, "/bytes/3000000");
        let out = lab.curl(
            "client",
            &url,
            &["-o", "/dev/null", "-w", "%{size_download}"],
        );
        assert_eq!(out.unwrap(), "3000000", "{url}");
    }
}

#[test]
fn lab_native_xdp_tx_reaches_a_real() {
    xdp_tx_reaches_a_real("xdpdrv");
}

#[test]
fn lab_generic_xdp_tx_reaches_a_real() {
    xdp_tx_reaches_a_real("xdpgeneric");
}

#[test]
fn lab_forwards_a_port_from_the_host_into_a_namespace() {
    let lab = lab();
    // real1's httpd listens on [::]:80, so on 127.0.0.1:80 inside real1 only.
    let target = SocketAddr::from(([127, 0, 0, 1], HTTP_PORT));
    let fwd = lab
        .forward("real1", target, SocketAddr::from(([127, 0, 0, 1], 0)))
        .unwrap();
    assert!(fwd.url().starts_with("http://127.0.0.1:"), "{}", fwd.url());
    let body = http_get(fwd.local, "/", Duration::from_secs(5)).unwrap();
    assert!(body.starts_with("real=real1 client=127.0.0.1 "), "{body}");
    // Large answers arrive whole, several connections at once.
    std::thread::scope(|s| {
        let gets: Vec<_> = (0..4)
            .map(|_| s.spawn(|| http_get(fwd.local, "/bytes/3000000", Duration::from_secs(10))))
            .collect();
        for g in gets {
            assert_eq!(g.join().unwrap().unwrap().len(), 3_000_000);
        }
    });
    let local = fwd.local;
    drop(fwd);
    assert!(
        TcpStream::connect_timeout(&local, Duration::from_secs(1)).is_err(),
        "{local} still accepts after the forward was dropped"
    );
}

#[test]
fn lab_flow_sync_key_is_private_and_well_formed() {
    let lab = lab();
    let key = lab.flow_sync_key().unwrap();
    assert_eq!(lab.flow_sync_key().unwrap(), key, "written once");
    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = fs::read_to_string(&key).unwrap();
    let lines: Vec<&str> = (text.lines())
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let (id, hex) = lines[0].split_once(' ').unwrap();
    assert_eq!(id, "1");
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{hex}");
    let yaml = lab.with_flow_sync(&lab.default_config()).unwrap();
    assert!(
        yaml.contains(&format!("\nmulticast: {FLOW_SYNC_GROUP}\n")),
        "{yaml}"
    );
    assert!(yaml.contains(&format!("\nflow_sync_key: {}\n", key.display())));
}

#[test]
fn lab_reals_answer_udp_from_the_vip() {
    let lab = lab();
    lab.route_vips_via("real3").unwrap();
    for vip in lab.vips() {
        let target = SocketAddr::new(vip, UDP_PORT);
        let body = lab
            .run_in("client", || {
                let any: SocketAddr = match vip {
                    IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
                    IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let s = std::net::UdpSocket::bind(any).unwrap();
                // connect(): only answers from the VIP itself are received.
                s.connect(target).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s.send(b"17").unwrap();
                let mut buf = [0u8; 256];
                let n = s.recv(&mut buf).unwrap();
                String::from_utf8_lossy(&buf[..n]).into_owned()
            })
            .unwrap();
        let f = fields(&body);
        assert_eq!(f["real"], "real3", "{body}");
        assert_eq!(f["vip"], vip.to_string(), "{body}");
        assert_eq!(f["seq"], "17", "{body}");
    }
}

#[test]
fn parse_ids() {
    assert_eq!(parse_id("123-4-client"), Some((123, 4)));
    assert_eq!(parse_id("123-4"), Some((123, 4)));
    assert_eq!(parse_id("123"), None);
    assert_eq!(parse_id("x-4"), None);
    assert_eq!(hex_like(21), 0x21);
}
