//! Tearing a lab down, on drop and for labs of processes that died: kill what runs
//! in its namespaces, unmount its bpffs, delete them and its directory.

use super::*;

impl Lab {
    /// Removes the labs of processes that no longer exist (killed before their `Lab` was
    /// dropped). Best effort: errors are reported on stderr. Labs of live processes,
    /// including this one's, are left alone.
    pub fn cleanup_stale() {
        let mut stale: HashSet<(u32, u32)> = HashSet::new();
        let names = fs::read_dir(NETNS_DIR).into_iter().flatten().flatten();
        for name in names.map(|e| e.file_name().to_string_lossy().into_owned()) {
            if let Some(key) = parse_id(name.strip_prefix("v5-").unwrap_or("")) {
                stale.insert(key);
            }
        }
        let dirs = fs::read_dir("/run").into_iter().flatten().flatten();
        for name in dirs.map(|e| e.file_name().to_string_lossy().into_owned()) {
            if let Some(key) = parse_id(name.strip_prefix("vc5-lab-").unwrap_or("")) {
                stale.insert(key);
            }
        }
        for (pid, n) in stale {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                remove_lab(&format!("v5-{pid}-{n}"), &lab_dir(pid, n));
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.children.clear();
        let namespaces: Vec<String> = self.nodes.iter().map(|n| n.ns.clone()).collect();
        teardown(&namespaces, &self.mounts, &self.dir, self.opts.keep_dir);
    }
}

/// Everything `Drop` does, also for stale labs: kill, unmount, delete, remove.
pub(super) fn teardown(namespaces: &[String], mounts: &[PathBuf], dir: &Path, keep_dir: bool) {
    let existing: Vec<&String> = namespaces
        .iter()
        .filter(|ns| Path::new(NETNS_DIR).join(ns).exists())
        .collect();
    // Processes keep a namespace (and any pinned program) alive after `ip netns del`.
    for ns in &existing {
        kill_all_in(ns);
    }
    for m in mounts {
        unmount(m);
    }
    for ns in &existing {
        if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", ns])) {
            eprintln!("vc5 lab: deleting namespace {ns}: {e:#}");
        }
    }
    if !keep_dir
        && dir.exists()
        && let Err(e) = fs::remove_dir_all(dir)
    {
        eprintln!("vc5 lab: removing {}: {e}", dir.display());
    }
}

pub(super) fn remove_lab(id: &str, dir: &Path) {
    let prefix = format!("{id}-");
    let namespaces: Vec<String> = fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let mounts = mounts_under(dir);
    if namespaces.is_empty() && mounts.is_empty() && !dir.exists() {
        return;
    }
    eprintln!("vc5 lab: removing stale lab {id}");
    teardown(&namespaces, &mounts, dir, false);
}

/// SIGKILLs every process in a namespace until none is left (bounded).
pub(super) fn kill_all_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = Command::new("ip")
            .args(["netns", "pids", ns])
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let pids: Vec<libc::pid_t> = pids.split_whitespace().flat_map(str::parse).collect();
        if pids.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("vc5 lab: processes {pids:?} in {ns} survive SIGKILL");
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory effects. The pid was just listed as living in
            // one of the lab's namespaces, so it is one of the lab's processes.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) fn mount_bpffs(path: &Path) -> Result<()> {
    let target = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!("mounting bpffs on {}: {e}", path.display());
    }
    Ok(())
}

pub(super) fn unmount(path: &Path) {
    let Ok(target) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path. A mount still busy (a process in another mount
    // namespace holding it) is detached instead, which frees it when that process ends.
    let rc = unsafe {
        if libc::umount2(target.as_ptr(), 0) == 0 {
            0
        } else {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH)
        }
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            eprintln!("vc5 lab: unmounting {}: {e}", path.display());
        }
    }
}

/// Mount points at or below `dir`, deepest first.
pub(super) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort();
    found.reverse();
    found
}
