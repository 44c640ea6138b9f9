//! The reals' HTTP servers (`lab/httpd.py`): starting, stopping, waiting for them.

use super::*;

impl Lab {
    pub(super) fn start_httpds(&mut self) -> Result<()> {
        let reals: Vec<String> = self
            .reals()
            .into_iter()
            .chain(self.remote_reals())
            .chain(self.vlan_reals())
            .collect();
        for real in &reals {
            self.spawn_httpd(real)?;
        }
        let targets: Vec<SocketAddr> = reals.iter().flat_map(|r| self.httpd_addrs(r)).collect();
        // Asked from the router, so this also proves the LAN works in both families.
        self.wait_httpd(&targets)
    }

    pub(super) fn spawn_httpd(&mut self, real: &str) -> Result<()> {
        let python = python()?;
        let script = self.dir.join("httpd.py");
        let log = self.httpd_log(real);
        let mut cmd = self.command(real, &[]);
        cmd.arg(&python).arg("-u").arg(&script).args([
            "--name",
            real,
            "--port",
            &HTTP_PORT.to_string(),
            "--udp-port",
            &UDP_PORT.to_string(),
            "--vip",
            &self.vip4.to_string(),
            "--vip",
            &self.vip6.to_string(),
        ]);
        let child = spawn_logged(cmd, &log)?;
        self.children.insert(real.to_string(), child);
        Ok(())
    }

    pub(super) fn httpd_addrs(&self, real: &str) -> [SocketAddr; 2] {
        [
            SocketAddr::new(self.addr4(real).into(), HTTP_PORT),
            SocketAddr::new(self.addr6(real).into(), HTTP_PORT),
        ]
    }

    pub(super) fn wait_httpd(&self, targets: &[SocketAddr]) -> Result<()> {
        self.run_in("router", || {
            for t in targets {
                retry(Duration::from_secs(10), || {
                    http_get(*t, "/health", Duration::from_secs(1))
                })
                .with_context(|| format!("httpd on {t} does not answer"))?;
            }
            Ok::<_, anyhow::Error>(())
        })?
    }

    /// Stops a real's HTTP server (SIGKILL): its port then refuses connections.
    pub fn stop_httpd(&mut self, real: &str) -> Result<()> {
        let mut child = self
            .children
            .remove(real)
            .with_context(|| format!("{real} runs no httpd"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts a real's HTTP server again and waits until it answers.
    pub fn start_httpd(&mut self, real: &str) -> Result<()> {
        ensure!(
            !self.children.contains_key(real),
            "{real} already runs its httpd"
        );
        self.spawn_httpd(real)?;
        self.wait_httpd(&self.httpd_addrs(real))
    }
}
