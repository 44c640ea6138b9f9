//! The systemd files: `systemd-analyze verify` prints nothing for
//! `systemd/vc5d.service` and `systemd/vc5-flowsync.service` (its exit
//! code stays 0 on warnings, so any output fails the test),
//! `systemd-analyze security` rates each below 2.0 with only the exposures
//! a root BPF daemon in the host's network namespace cannot avoid, the
//! tmpfiles entry creates what BIRD needs, the EnvironmentFile examples
//! hold the flags the daemons need, and vc5-flowsync's unit is independent
//! of vc5d's (a restart of one leaves the other running).
//!
//! Needs the Debian package systemd (systemd-analyze, systemd-tmpfiles).

mod ops_common;

use ops_common::{repo, text};
use std::process::Command;

/// The unit as shipped, with ExecStart's binary replaced by one that
/// exists here (verify checks that it does): vc5d as built for this test
/// when the package has it, else /bin/true.
fn unit_in_temp_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let binary = option_env!("CARGO_BIN_EXE_vc5d").unwrap_or("/bin/true");
    unit_copy(
        "vc5d.service",
        "ExecStart=/usr/local/sbin/vc5d $VC5D_ARGS",
        binary,
    )
}

/// vc5-flowsync.service as shipped, running /bin/true (vc5-flowsync is
/// another package's binary, so this test has no path to it).
fn flowsync_unit_in_temp_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    unit_copy(
        "vc5-flowsync.service",
        "ExecStart=/usr/local/sbin/vc5-flowsync $VC5_FLOWSYNC_ARGS",
        "/bin/true",
    )
}

/// `systemd/<name>` in a temporary directory, its one ExecStart line
/// (which must be `exec`) running `binary` instead.
fn unit_copy(name: &str, exec: &str, binary: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let unit = std::fs::read_to_string(repo().join("systemd").join(name)).unwrap();
    let lines = unit
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect::<Vec<_>>();
    assert_eq!(lines, [exec]);
    let (program, args) = exec.split_once(' ').unwrap();
    let unit = unit.replace(exec, &format!("ExecStart={binary} {args}"));
    assert!(program.starts_with("ExecStart=/usr/local/sbin/"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, unit).unwrap();
    (dir, path)
}

#[test]
fn verify_prints_nothing() {
    let (_dir, unit) = unit_in_temp_dir();
    verify(&unit);
}

#[test]
fn flowsync_verify_prints_nothing() {
    let (_dir, unit) = flowsync_unit_in_temp_dir();
    verify(&unit);
}

fn verify(unit: &std::path::Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{said}",
        out.status
    );
}

/// What a root XDP load balancer in the host's network namespace cannot
/// avoid: it runs as root (the bpffs pins, the D-Bus name), holds CAP_BPF
/// and CAP_NET_ADMIN (so bpf(2), in @privileged, is allowed), needs
/// netlink, unix and IP sockets to any address (reals, BGP peers,
/// clients), the host's network and users; ProtectClock adds a read-only
/// RTC device; and BIRD (another user) reads the include file, hence
/// UMask=0022.
const UNAVOIDABLE: &[&str] = &[
    "SystemCallFilter=~@privileged",
    "RootDirectory=/RootImage=",
    "User=/DynamicUser=",
    "CapabilityBoundingSet=~CAP_BPF",
    "CapabilityBoundingSet=~CAP_NET_ADMIN",
    "RestrictAddressFamilies=~AF_NETLINK",
    "RestrictAddressFamilies=~AF_UNIX",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "PrivateNetwork=",
    "PrivateUsers=",
    "DeviceAllow=",
    "IPAddressDeny=",
    "UMask=",
];

/// The score of the unit with only [`UNAVOIDABLE`] exposures is 1.9 on
/// systemd 252; any hardening option dropped adds at least 0.1.
const MAX_EXPOSURE: f64 = 1.9;

#[test]
fn security_exposure_is_low() {
    let (_dir, unit) = unit_in_temp_dir();
    let score = exposure(&unit, UNAVOIDABLE);
    assert!(score <= MAX_EXPOSURE, "exposure {score} > {MAX_EXPOSURE}");
}

/// What vc5-flowsync cannot avoid: vc5d's list but for CAP_NET_ADMIN (it
/// has only CAP_BPF), netlink (it needs none) and UMask (it writes no file
/// for anyone).
const FLOWSYNC_UNAVOIDABLE: &[&str] = &[
    "SystemCallFilter=~@privileged",
    "RootDirectory=/RootImage=",
    "User=/DynamicUser=",
    "CapabilityBoundingSet=~CAP_BPF",
    "RestrictAddressFamilies=~AF_UNIX",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "PrivateNetwork=",
    "PrivateUsers=",
    "DeviceAllow=",
    "IPAddressDeny=",
];

/// vc5-flowsync.service scores 1.7 on systemd 252 with only
/// [`FLOWSYNC_UNAVOIDABLE`] exposures.
const FLOWSYNC_MAX_EXPOSURE: f64 = 1.7;

#[test]
fn flowsync_security_exposure_is_low() {
    let (_dir, unit) = flowsync_unit_in_temp_dir();
    let score = exposure(&unit, FLOWSYNC_UNAVOIDABLE);
    assert!(
        score <= FLOWSYNC_MAX_EXPOSURE,
        "exposure {score} > {FLOWSYNC_MAX_EXPOSURE}"
    );
}

/// `systemd-analyze security` of a unit: fails on an exposure not in
/// `unavoidable`, returns the overall score (printed with the table).
fn exposure(unit: &std::path::Path, unavoidable: &[&str]) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let table = text(&out.stdout);
    println!("{table}{}", text(&out.stderr));
    assert!(out.status.success());
    let failing: Vec<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("✗ "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let unexpected: Vec<&&str> = failing
        .iter()
        .filter(|f| !unavoidable.contains(f))
        .collect();
    assert!(
        unexpected.is_empty(),
        "exposures beyond the unavoidable ones: {unexpected:?}"
    );
    let name = unit.file_name().unwrap().to_string_lossy();
    let score: f64 = table
        .lines()
        .find_map(|l| {
            l.split(&format!("Overall exposure level for {name}: "))
                .nth(1)
        })
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{table}"));
    println!("{name}: overall exposure {score}");
    score
}

#[test]
fn unit_essentials() {
    let unit = std::fs::read_to_string(repo().join("systemd/vc5d.service")).unwrap();
    let keys: Vec<&str> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "BusName=org.vc5.Balancer1",
        "EnvironmentFile=/etc/default/vc5d",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON",
        "ProtectSystem=strict",
        "ReadWritePaths=/sys/fs/bpf",
        "RuntimeDirectory=vc5",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "NoNewPrivileges=yes",
    ] {
        assert!(keys.contains(&want), "vc5d.service lacks {want}");
    }
    assert!(keys.iter().any(|k| k.starts_with("WatchdogSec=")));
}

#[test]
fn tmpfiles_creates_the_bird_include() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", root.path().display()))
        .arg(repo().join("systemd/vc5d.conf"))
        .output()
        .expect("systemd-tmpfiles (Debian package systemd)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).trim().is_empty(), "{}", text(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    let dir = std::fs::metadata(root.path().join("run/vc5")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(dir.permissions().mode() & 0o777, 0o755);
    let inc = std::fs::metadata(root.path().join("run/vc5/bird-vips.conf")).unwrap();
    assert!(inc.is_file() && inc.len() == 0);
    assert_eq!(inc.permissions().mode() & 0o777, 0o644);
}

#[test]
fn environment_file_example() {
    let text = std::fs::read_to_string(repo().join("systemd/vc5d.default")).unwrap();
    let args = text
        .lines()
        .find_map(|l| l.strip_prefix("VC5D_ARGS=\"")?.strip_suffix('"'))
        .expect("a VC5D_ARGS=\"…\" line");
    let flags: Vec<&str> = args
        .split_whitespace()
        .filter(|a| a.starts_with("--"))
        .collect();
    for required in ["--config", "--interface", "--address"] {
        assert!(flags.contains(&required), "VC5D_ARGS lacks {required}");
    }
    for word in ["…", "<", ">", "XXX", "CHANGEME"] {
        assert!(!text.contains(word), "placeholder {word:?} in vc5d.default");
    }
    // Every flag is one vc5d knows, when vc5d is built alongside.
    if let Some(vc5d) = option_env!("CARGO_BIN_EXE_vc5d") {
        let help = Command::new(vc5d).arg("--help").output().unwrap();
        let help = ops_common::text(&help.stdout);
        for f in &flags {
            assert!(help.contains(f), "vc5d --help does not know {f}");
        }
    }
}

#[test]
fn flowsync_unit_essentials() {
    let unit = std::fs::read_to_string(repo().join("systemd/vc5-flowsync.service")).unwrap();
    let keys: Vec<&str> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for want in [
        "EnvironmentFile=/etc/default/vc5-flowsync",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "CapabilityBoundingSet=CAP_BPF",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "WantedBy=multi-user.target",
    ] {
        assert!(keys.contains(&want), "vc5-flowsync.service lacks {want}");
    }
    // Independent of vc5d: ordered after it, never bound to it, so that
    // restarting either leaves the other alone.
    let after = keys.iter().find(|k| k.starts_with("After=")).unwrap();
    assert!(after.contains("vc5d.service"), "{after}");
    for dependency in ["Requires=", "Requisite=", "BindsTo=", "PartOf=", "Upholds="] {
        assert!(
            !keys.iter().any(|k| k.starts_with(dependency)),
            "vc5-flowsync.service has {dependency}: a vc5d restart would stop it"
        );
    }
    // It writes nothing: no writable path, no state or runtime directory.
    for key in ["ReadWritePaths=", "StateDirectory=", "RuntimeDirectory="] {
        assert!(
            !keys.iter().any(|k| k.starts_with(key)),
            "{key} in the unit"
        );
    }
}

#[test]
fn flowsync_environment_file_example() {
    let text = std::fs::read_to_string(repo().join("systemd/vc5-flowsync.default")).unwrap();
    let args = text
        .lines()
        .find_map(|l| l.strip_prefix("VC5_FLOWSYNC_ARGS=\"")?.strip_suffix('"'))
        .expect("a VC5_FLOWSYNC_ARGS=\"…\" line");
    let flags: Vec<&str> = args
        .split_whitespace()
        .filter(|a| a.starts_with("--"))
        .collect();
    assert_eq!(flags, ["--config", "--interface", "--address", "--bpffs"]);
    // The same host as vc5d's example: configuration, interface, address
    // and bpffs.
    let vc5d = std::fs::read_to_string(repo().join("systemd/vc5d.default")).unwrap();
    for pair in args.split(" --") {
        let pair = pair.trim_start_matches("--");
        assert!(vc5d.contains(pair), "vc5d.default has no {pair:?}");
    }
    for word in ["…", "<", ">", "XXX", "CHANGEME"] {
        assert!(
            !text.contains(word),
            "placeholder {word:?} in vc5-flowsync.default"
        );
    }
}

/// The drop-in for probes through the VIP verifies with the unit, and
/// grants exactly what making the probe namespace needs: CAP_SYS_ADMIN
/// on top of the unit's three, and network namespaces only.
#[test]
fn probe_vip_drop_in_verifies_and_adds_only_the_namespace() {
    let (dir, unit) = unit_in_temp_dir();
    let drop_in = std::fs::read_to_string(repo().join("systemd/vc5d-probe-vip.conf")).unwrap();
    let d = dir.path().join("vc5d.service.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("probe-vip.conf"), &drop_in).unwrap();
    verify(&unit);
    let settings: Vec<&str> = drop_in
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        settings,
        [
            "[Service]",
            "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_ADMIN",
            "RestrictNamespaces=net",
        ]
    );
    let shipped = std::fs::read_to_string(&unit).unwrap();
    assert!(shipped.contains("\nCapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON\n"));
}
