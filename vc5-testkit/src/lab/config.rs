//! vc5d configurations for the lab: services over the lab's reals, route health
//! injection, flow sync, and writing them where vc5d reads them.

use super::*;

impl Lab {
    /// A vc5d configuration for this lab: one HTTP service on port 80 for each VIP, the
    /// reals (their IPv4 LAN addresses; in L2 DSR only their MACs matter) as one group.
    pub fn default_config(&self) -> String {
        self.config_for_reals(&self.reals())
    }

    /// [`Lab::default_config`] with only these reals in the group (e.g. three of a lab's
    /// four, to add the fourth later with a reload).
    pub fn config_for_reals(&self, reals: &[String]) -> String {
        let reals: Vec<String> = reals.iter().map(|r| self.addr4(r).to_string()).collect();
        format!(
            "# vc5d configuration for lab {id}\n\
             services:\n\
             \x20 - name: web4\n\
             \x20   desc: lab web service over IPv4\n\
             \x20   addr: {vip4}\n\
             \x20   port: {HTTP_PORT}\n\
             \x20   real: web\n\
             \x20   need: 1\n\
             \x20   checks:\n\
             \x20     - {{name: health, type: http, port: {HTTP_PORT}, path: /health}}\n\
             \x20 - name: web6\n\
             \x20   desc: lab web service over IPv6\n\
             \x20   addr: \"{vip6}\"\n\
             \x20   port: {HTTP_PORT}\n\
             \x20   real: web\n\
             \x20   need: 1\n\
             \x20   checks:\n\
             \x20     - {{name: health, type: http, port: {HTTP_PORT}, path: /health}}\n\
             reals:\n\
             \x20 web: [{reals}]\n",
            id = self.id,
            vip4 = self.vip4,
            vip6 = self.vip6,
            reals = reals.join(", "),
        )
    }

    /// [`Lab::config_for_reals`] plus a UDP service on each VIP ([`UDP_PORT`], `udp4` and
    /// `udp6`, with a tcp check on the same port).
    pub fn config_with_udp(&self, reals: &[String]) -> String {
        let mut udp = String::new();
        for (name, vip) in [
            ("udp4", self.vip4.to_string()),
            ("udp6", self.vip6.to_string()),
        ] {
            udp += &format!(
                "\x20 - name: {name}\n\
                 \x20   desc: lab UDP answer service\n\
                 \x20   addr: \"{vip}\"\n\
                 \x20   port: {UDP_PORT}\n\
                 \x20   protocol: udp\n\
                 \x20   real: web\n\
                 \x20   checks:\n\
                 \x20     - {{name: tcp, type: tcp, port: {UDP_PORT}, interval: 1s, timeout: 500ms}}\n"
            );
        }
        self.config_for_reals(reals)
            .replacen("reals:\n", &format!("{udp}reals:\n"), 1)
    }

    /// A configuration that tunnels to the remote reals: [`Lab::default_config`]'s two
    /// services with `forward` (`ipip`, `gre`, `fou` or `gue`, with [`FOU_PORT`] or
    /// [`GUE_PORT`]) and the remote reals' IPv4 addresses, or IPv6 ones with `outer6`
    /// (the outer header follows the real's family, whatever the VIP's).
    pub fn remote_config(&self, forward: &str, outer6: bool) -> String {
        let port = match forward {
            "fou" => format!("\n\x20   tunnel_port: {FOU_PORT}"),
            "gue" => format!("\n\x20   tunnel_port: {GUE_PORT}"),
            _ => String::new(),
        };
        let reals: Vec<String> = self
            .remote_reals()
            .iter()
            .map(|r| match outer6 {
                false => self.addr4(r).to_string(),
                true => format!("\"{}\"", self.addr6(r)),
            })
            .collect();
        let config = self.default_config();
        let (_, services) = config.split_once("services:\n").unwrap_or_default();
        let (services, _) = services.split_once("reals:\n").unwrap_or_default();
        format!(
            "# vc5d configuration for lab {id}: {forward} to the remote reals\n\
             services:\n{services}reals:\n\x20 web: [{reals}]\n",
            id = self.id,
            services = services.replace(
                "\x20   real: web\n",
                &format!("\x20   forward: {forward}{port}\n\x20   real: web\n")
            ),
            reals = reals.join(", "),
        )
    }

    /// [`Lab::default_config`] over the VLAN reals (their IPv4 addresses) with `vlans`
    /// naming VLANs 10 and 20 by their prefixes.
    pub fn vlan_config(&self) -> String {
        let reals: Vec<String> = self.vlan_reals().iter().map(|r| r.to_string()).collect();
        let mut yaml = self.config_for_reals(&[]);
        let addrs: Vec<String> = reals.iter().map(|r| self.addr4(r).to_string()).collect();
        yaml = yaml.replace("  web: []\n", &format!("  web: [{}]\n", addrs.join(", ")));
        yaml += "vlans:\n";
        for v in VLANS {
            yaml += &format!(
                "  {v}: [{}/24, \"{}/64\"]\n",
                tools::vlan_net4(v, 0),
                tools::vlan_net6(v, 0)
            );
        }
        yaml
    }

    /// Where a load balancer's own configuration goes, if it has one
    /// (`start_vc5d` prefers it to the shared [`Lab::config_path`]).
    pub fn config_path_for(&self, lb: &str) -> PathBuf {
        self.dir.join(format!("vc5d-{lb}.yaml"))
    }

    /// [`Lab::default_config`] with route health injection for one load
    /// balancer: BGP to the router (the built-in speaker, used when no
    /// BIRD runs beside vc5d), IPv6 VIPs with the load balancer's IPv6
    /// address as next hop.
    pub fn rhi_config(&self, lb: &str) -> String {
        format!("{}{}", self.default_config(), self.rhi_section(lb))
    }

    /// The `rhi:` section of [`Lab::rhi_config`], to append to a configuration of one's own.
    pub fn rhi_section(&self, lb: &str) -> String {
        format!(
            "rhi:\n  as_number: {LB_ASN}\n  peers: [{}]\n  hold_time: 9\n  next_hop6: \"{}\"\n",
            self.addr4("router"),
            self.addr6(lb)
        )
    }

    /// The configuration a load balancer's vc5d and vc5-flowsync read: its own
    /// ([`Lab::config_path_for`]) if written, else the shared [`Lab::config_path`].
    pub fn config_of(&self, lb: &str) -> PathBuf {
        let own = self.config_path_for(lb);
        if own.exists() {
            own
        } else {
            self.config_path()
        }
    }

    /// Writes a load balancer's own configuration (see `config_path_for`).
    pub fn write_config_for(&self, lb: &str, yaml: &str) -> Result<PathBuf> {
        let path = self.config_path_for(lb);
        let tmp = self.dir.join(format!(".vc5d-{lb}.yaml.tmp"));
        fs::write(&tmp, yaml)?;
        fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Writes [`Lab::default_config`] to [`Lab::config_path`].
    pub fn write_config(&self) -> Result<PathBuf> {
        self.write_config_text(&self.default_config())
    }

    /// Writes a configuration of the caller's to [`Lab::config_path`] (atomically, so a
    /// vc5d reloading on SIGHUP never reads half of it).
    pub fn write_config_text(&self, yaml: &str) -> Result<PathBuf> {
        let path = self.config_path();
        let tmp = self.dir.join(".vc5d.yaml.tmp");
        fs::write(&tmp, yaml)?;
        fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// The lab's flow-sync key file (`flow_sync_key`): one key, ID 1, 32 random bytes in
    /// the `ID HEX` format, mode 0600 (vc5-flowsync refuses a file others can read).
    /// Written on the first call; every load balancer of the lab shares it.
    pub fn flow_sync_key(&self) -> Result<PathBuf> {
        let path = self.dir.join("flow-sync.key");
        if path.exists() {
            return Ok(path);
        }
        let mut key = [0u8; 32];
        File::open("/dev/urandom")?.read_exact(&mut key)?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        writeln!(f, "# vc5 lab {}: flow-sync key (ID HEX)\n1 {hex}", self.id)?;
        Ok(path)
    }

    /// A configuration with flow sync turned on: `multicast` ([`FLOW_SYNC_GROUP`], on the
    /// LAN) and `flow_sync_key` (the lab's [`Lab::flow_sync_key`]) appended.
    pub fn with_flow_sync(&self, yaml: &str) -> Result<String> {
        let key = self.flow_sync_key()?;
        Ok(format!(
            "{yaml}multicast: {FLOW_SYNC_GROUP}\nflow_sync_key: {}\n",
            key.display()
        ))
    }
}
