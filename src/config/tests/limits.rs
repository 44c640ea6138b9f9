//! Bounds on what a file may ask for: the data plane's tables and the size of
//! the input, and the README's benchmark scale well within them.

use std::path::Path;
use std::time::Duration;

use super::hardening::{assert_err, fail, svc};
use crate::config::{MAX_FILE_BYTES, load, parse};

#[test]
fn the_data_plane_limits_are_checked_before_anything_runs() {
    // One service with 4096 ports is 4096 endpoints: one more than the table.
    let ports: Vec<String> = (1..=4096).map(|p| p.to_string()).collect();
    let text = svc("").replace("port: 80", &format!("port: [{}]", ports.join(", ")));
    assert_err(
        &text,
        "2:5",
        "there are 4096 VIP:port endpoints; the data plane holds at most 4095",
    );
    let ok = svc("").replace("port: 80", &format!("port: [{}]", ports[..4095].join(", ")));
    assert_eq!(
        parse(&ok, "t.yaml").unwrap().services[0].endpoints().len(),
        4095
    );

    // 16 ports × 4097 reals = 65552 pairs, over the 65535 backends.
    let reals: Vec<String> = (0..4097)
        .map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let text = format!(
        "services:\n  - name: big\n    addr: 192.0.2.1\n    port: [{}]\n    real: pool\nreals:\n  pool: [{}]\n",
        ports[..16].join(", "),
        reals.join(", ")
    );
    assert_err(
        &text,
        "2:5",
        "there are 65552 (endpoint, real) pairs; the data plane holds at most 65535",
    );
}

#[test]
fn the_size_of_the_input_is_bounded() {
    let big = format!("# {}\nservices: []\n", "x".repeat(MAX_FILE_BYTES as usize));
    assert!(fail(&big).contains("larger than 16 MiB (16777216 bytes)"));

    // /dev/zero never ends: it must be refused after MAX_FILE_BYTES, not read
    // until memory runs out.
    let started = std::time::Instant::now();
    let e = load(Path::new("/dev/zero")).unwrap_err();
    assert!(
        e.to_string()
            .contains("larger than 16 MiB (16777216 bytes)"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let dir = std::env::temp_dir().join(format!("vc5-config-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bin.yaml");
    std::fs::write(&path, b"services: []\nreals:\n  g: [\xff]\n").unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!((e.line(), e.column()), (Some(3), Some(7)), "{e}");
    assert!(e.to_string().contains("not UTF-8"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The README's benchmark scale: `services` services of `reals` reals each,
/// every real written as `{addr, weight}`.
pub(crate) fn benchmark_scale(services: usize, reals: usize) -> String {
    let mut text = String::from("services:\n");
    for s in 0..services {
        text.push_str(&format!(
            "  - name: svc{s}\n    addr: 10.{}.{}.1\n    port: 80\n    real: g{s}\n    checks: [{{type: http, path: /alive}}]\n",
            100 + s / 250,
            s % 250
        ));
    }
    text.push_str("reals:\n");
    for s in 0..services {
        text.push_str(&format!("  g{s}:\n"));
        for r in 0..reals {
            text.push_str(&format!(
                "    - {{addr: 172.{}.{}.{}, weight: {}}}\n",
                16 + s / 250,
                s % 250,
                r + 1,
                r % 3 + 1
            ));
        }
    }
    text
}

#[test]
fn the_readme_benchmark_scale_loads() {
    let text = benchmark_scale(1000, 64);
    assert!((text.len() as u64) < MAX_FILE_BYTES);
    let c = parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.services.len(), 1000);
    assert!(c.services.iter().all(|s| s.reals.len() == 64));
    assert_eq!(c.services[999].reals[63].weight, 64 % 3);
}
