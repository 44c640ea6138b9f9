//! Traffic and its prediction: which real vc5's table and which load balancer the
//! router's ECMP give a flow, and paced downloads checked against their hashes.

use super::*;

impl Lab {
    /// The real vc5's lookup table sends a new flow to, among `reals` (all healthy, weight
    /// 1, as in [`Lab::config_for_reals`]): computed with the data plane's own hash
    /// (`vc5_xdp::hash::flow_hash`) and table builder (`vc5_xdp::table`), so a test can
    /// pick client ports whose flows move, or stay, when a real is added.
    pub fn predicted_real(
        &self,
        reals: &[String],
        client: SocketAddr,
        vip: SocketAddr,
        proto: u8,
    ) -> String {
        let weighted: Vec<(String, u32)> = reals.iter().map(|r| (r.clone(), 1)).collect();
        self.predicted_real_weighted(&weighted, client, vip, proto)
    }

    /// [`Lab::predicted_real`] with a weight for each real.
    pub fn predicted_real_weighted(
        &self,
        reals: &[(String, u32)],
        client: SocketAddr,
        vip: SocketAddr,
        proto: u8,
    ) -> String {
        use vc5_xdp::maps::{TABLE_SIZE, addr16};
        use vc5_xdp::table::{Candidate, build, service_seed};
        let candidates: Vec<Candidate> = (reals.iter().enumerate())
            .map(|(i, (r, weight))| Candidate {
                addr: self.addr4(r).into(),
                weight: *weight,
                backend: i as u16,
            })
            .collect();
        let table = build(service_seed(vip.ip(), vip.port(), proto), &candidates);
        let h = vc5_xdp::hash::flow_hash(
            &addr16(client.ip()),
            &addr16(vip.ip()),
            client.port().to_be(),
            vip.port().to_be(),
            proto,
        );
        let bucket = h as usize & (TABLE_SIZE - 1);
        reals[usize::from(table.backend[bucket])].0.clone()
    }

    /// The node the router forwards a flow from the client to (its multipath route's
    /// choice for this 5-tuple, as `ip route get` computes it), e.g. `lb1`.
    pub fn router_next_hop(
        &self,
        client: SocketAddr,
        vip: SocketAddr,
        proto: &str,
    ) -> Result<String> {
        let out = self.run(
            "router",
            &[
                "ip",
                "route",
                "get",
                &vip.ip().to_string(),
                "from",
                &client.ip().to_string(),
                "iif",
                "eth1",
                "ipproto",
                proto,
                "sport",
                &client.port().to_string(),
                "dport",
                &vip.port().to_string(),
            ],
        )?;
        let via = (out.split_whitespace())
            .skip_while(|w| *w != "via")
            .nth(1)
            .with_context(|| format!("no next hop in {out:?}"))?;
        let via: IpAddr = via.parse()?;
        (self.nodes.iter())
            .filter(|n| !matches!(n.kind, Kind::Switch | Kind::Client))
            .find(|n| via == IpAddr::from(self.addr4(&n.name)) || via == self.addr6(&n.name))
            .map(|n| n.name.clone())
            .with_context(|| format!("next hop {via} is no node of the lab"))
    }

    /// Starts a download of `/bytes/<bytes>` from the client through a VIP with curl, sent
    /// by the real at `rate` bytes per second at most (0: as fast as it goes; the lab's
    /// httpd paces it, since curl's `--limit-rate` averages over seconds and lets a veth
    /// deliver megabytes at once), from client port
    /// `local_port` when given (so that its 4-tuple, hence its load balancer and real, is
    /// known in advance). The body goes to a file in the lab directory, the headers (with
    /// the real's `X-Real`) to another as soon as they arrive.
    pub fn start_transfer(
        &self,
        vip: IpAddr,
        bytes: usize,
        rate: u64,
        local_port: Option<u16>,
    ) -> Result<Transfer> {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let headers = self.dir.join(format!("transfer-{n}.headers"));
        let output = self.dir.join(format!("transfer-{n}.body"));
        let url = Lab::url(vip, &format!("/bytes/{bytes}?rate={rate}"));
        let (h, o) = (headers.to_string_lossy(), output.to_string_lossy());
        let port = local_port.map(|p| p.to_string());
        let mut argv = vec![
            "curl",
            "-sS",
            "--fail",
            "-D",
            &h,
            "-o",
            &o,
            "-w",
            "%{size_download}",
        ];
        if let Some(p) = &port {
            argv.extend(["--local-port", p]);
        }
        argv.push(&url);
        let curl = self.spawn("client", &argv)?;
        Ok(Transfer {
            curl,
            headers,
            output,
            bytes,
            url,
        })
    }

    /// The SHA-256 of `/bytes/<bytes>` as the reals serve it, fetched straight from
    /// `real` (from the router, bypassing the load balancers).
    pub fn reference_sha256(&self, real: &str, bytes: usize) -> Result<String> {
        let out = self.dir.join(format!("reference-{bytes}.body"));
        let url = Lab::url(self.addr4(real).into(), &format!("/bytes/{bytes}"));
        let o = out.to_string_lossy();
        self.curl("router", &url, &["-o", &o, "--max-time", "30"])?;
        sha256_file(&out)
    }
}

/// A download started by [`Lab::start_transfer`]. Killed if dropped unfinished.
pub struct Transfer {
    curl: LabChild,
    /// Where curl writes the response headers.
    pub headers: PathBuf,
    /// Where curl writes the body.
    pub output: PathBuf,
    /// The size asked for.
    pub bytes: usize,
    pub url: String,
}

/// How a [`Transfer`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferEnd {
    /// curl exited 0.
    pub ok: bool,
    /// Bytes received.
    pub received: u64,
    /// SHA-256 of what was received, hexadecimal.
    pub sha256: String,
    /// curl's stderr and `-w` output (its complaint when it failed).
    pub curl_said: String,
}

impl Transfer {
    /// The real serving it (the `X-Real` header), once its headers have arrived.
    pub fn real(&self, timeout: Duration) -> Result<String> {
        retry(timeout, || {
            let h = fs::read_to_string(&self.headers).unwrap_or_default();
            h.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("x-real")
                        .then(|| v.trim().to_string())
                })
                .with_context(|| format!("no answer yet for {}", self.url))
        })
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        fs::metadata(&self.output).map_or(0, |m| m.len())
    }

    /// Whether curl is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.curl.try_wait(), Ok(None))
    }

    /// Waits for curl to exit (killing it after `timeout`) and describes the result.
    pub fn finish(mut self, timeout: Duration) -> Result<TransferEnd> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.curl.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                self.curl.kill()?;
                break self.curl.wait()?;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(TransferEnd {
            ok: status.success(),
            received: self.received(),
            sha256: if self.output.exists() {
                sha256_file(&self.output)?
            } else {
                String::new()
            },
            curl_said: self.curl.log_text().trim().to_string(),
        })
    }
}

/// `sha256sum FILE`'s hash.
pub fn sha256_file(path: &Path) -> Result<String> {
    let out = run_cmd(Command::new("sha256sum").arg(path))?;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}
