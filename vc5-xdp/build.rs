//! Compiles the eBPF C programs in `bpf/` with clang into `OUT_DIR`, where
//! `src/lib.rs` embeds them. Debian's clang-19 is preferred; `CLANG` picks
//! another. `-g` keeps BTF, which aya needs for the maps and which makes
//! `bpftool map dump` readable.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// (object, source, extra clang flags)
const PROGRAMS: &[(&str, &str, &[&str])] = &[
    ("vc5", "vc5", &[]),
    ("vc5_bench", "vc5", &["-DVC5_BENCH"]),
    // The program as it was before flow sync, for the benchmark's
    // before/after rows.
    (
        "vc5_nosync_bench",
        "vc5",
        &["-DVC5_BENCH", "-DVC5_NO_FLOWSYNC"],
    ),
    // Flow events with the ring's adaptive wake-ups (see VC5_EVENT_WAKE in
    // vc5.c), for the benchmark's comparison with the default.
    (
        "vc5_adaptive_bench",
        "vc5",
        &["-DVC5_BENCH", "-DVC5_EVENT_WAKE=0"],
    ),
    // Every repetition an insert after a handshake, or a sampled packet:
    // the benchmark's inserting rows (see VC5_BENCH_PENDING in vc5.c).
    (
        "vc5_pending_bench",
        "vc5",
        &["-DVC5_BENCH", "-DVC5_BENCH_PENDING"],
    ),
    // The program before probes through the VIP (no reply lookup on the
    // not-a-VIP path), for the benchmark's before/after rows.
    (
        "vc5_noprobe_bench",
        "vc5",
        &["-DVC5_BENCH", "-DVC5_NO_PROBES"],
    ),
    (
        "vc5_sample_bench",
        "vc5",
        &["-DVC5_BENCH", "-DVC5_SAMPLE_BITS=0"],
    ),
    ("floor", "floor", &[]),
];

fn clang() -> String {
    if let Ok(c) = env::var("CLANG") {
        return c;
    }
    for c in ["clang-19", "clang"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!("no clang found: install Debian's clang-19 (lab/deps does) or set CLANG");
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = clang();
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed=bpf");
    // Debian keeps asm/ headers under the multiarch directory.
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    for (name, source, flags) in PROGRAMS {
        let src = format!("bpf/{source}.c");
        let obj = out.join(format!("{name}.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .args(*flags)
            .args(["-c", &src, "-o"])
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| panic!("running {clang}: {e}"));
        assert!(status.success(), "{clang} failed on {src}");
    }
}
