#!/usr/bin/env python3
"""Measure the two ways vc5 can drive BIRD (see src/bird/mod.rs docs).

(a) one static protocol per address family whose routes are the VIPs; the
    include file is rewritten and BIRD is told `configure`;
(b) one static protocol per VIP, declared once, switched with enable/disable.

Builds two network namespaces (lb, rt) joined by a veth pair, runs a BIRD in
each (lb exports the vc5 routes to rt over eBGP) and times, for N VIPs already
present, the announcement and the withdrawal of one more VIP as seen in rt's
RIB (polled over rt's control socket). Run as root; cleans up after itself.
"""
import os, shutil, signal, socket, subprocess, sys, time, tempfile, statistics

PID = os.getpid()
LB, RT = f"vc5bb-{PID}-m-lb", f"vc5bb-{PID}-m-rt"
TMP = tempfile.mkdtemp(prefix="vc5bb-measure-")


def sh(*a):
    subprocess.run(a, check=True)


class Cli:
    def __init__(self, path):
        for _ in range(100):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        self.buf = b""
        self.reply()

    def reply(self):
        lines = []
        while True:
            while b"\n" not in self.buf:
                self.buf += self.s.recv(65536)
            line, self.buf = self.buf.split(b"\n", 1)
            lines.append(line.decode())
            if len(line) > 4 and line[:4].isdigit() and line[4:5] == b" ":
                return lines

    def cmd(self, c):
        self.s.sendall(c.encode() + b"\n")
        return self.reply()


def vip(i):
    return f"203.0.{113 + i // 250}.{i % 250 + 1}"


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def inc_a(vips):
    routes = "".join(f"  route {v}/32 blackhole;\n" for v in vips)
    return f"protocol static vc5_vips4 {{\n  ipv4;\n{routes}}}\n"


def inc_b(vips, enabled):
    out = []
    for v in vips:
        name = "vc5_" + v.replace(".", "_")
        dis = "" if v in enabled else "  disabled;\n"
        out.append(f"protocol static {name} {{\n{dis}  ipv4;\n  route {v}/32 blackhole;\n}}\n")
    return "".join(out)


def visible(rt, v):
    r = rt.cmd(f"show route {v}/32")
    if r[-1].startswith("8001"):  # Network not found
        return False
    assert r[-1][:1] == "0", r
    return any(v + "/32" in l for l in r)


def wait(rt, v, want):
    while visible(rt, v) != want:
        pass


def main():
    sh("ip", "netns", "add", LB)
    sh("ip", "netns", "add", RT)
    procs = []
    try:
        sh("ip", "-n", LB, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", RT)
        for ns, a in ((LB, "192.0.2.1"), (RT, "192.0.2.2")):
            sh("ip", "-n", ns, "addr", "add", a + "/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        inc = f"{TMP}/vips.conf"
        write(f"{TMP}/rt.conf", "router id 192.0.2.2;\nprotocol device {}\n"
              "protocol bgp to_lb { local 192.0.2.2 as 65001; neighbor 192.0.2.1 as 65000;"
              " ipv4 { import all; export none; }; }\n")
        results = []
        for n in (1, 500):
            for strat in ("a", "b"):
                vips = [vip(i) for i in range(n + 1)]
                base, extra = vips[:n], vips[n]
                if strat == "a":
                    write(inc, inc_a(base))
                else:
                    write(inc, inc_b(vips, set(base)))
                write(f"{TMP}/lb.conf", "router id 192.0.2.1;\nprotocol device {}\n"
                      f'include "{inc}";\n'
                      "protocol bgp to_rt { local 192.0.2.1 as 65000; neighbor 192.0.2.2 as 65001;"
                      ' ipv4 { import none; export where proto ~ "vc5_*"; }; }\n')
                lb = subprocess.Popen(["ip", "netns", "exec", LB, "bird", "-f", "-c", f"{TMP}/lb.conf",
                                       "-s", f"{TMP}/lb.ctl", "-P", f"{TMP}/lb.pid"])
                rt = subprocess.Popen(["ip", "netns", "exec", RT, "bird", "-f", "-c", f"{TMP}/rt.conf",
                                       "-s", f"{TMP}/rt.ctl", "-P", f"{TMP}/rt.pid"])
                procs += [lb, rt]
                lbc, rtc = Cli(f"{TMP}/lb.ctl"), Cli(f"{TMP}/rt.ctl")
                wait(rtc, base[-1], True)
                ann, wd, cmd_ms = [], [], []
                for _ in range(20):
                    for up in (True, False):
                        t0 = time.perf_counter()
                        if strat == "a":
                            write(inc, inc_a(base + [extra] if up else base))
                            r = lbc.cmd("configure")
                        else:
                            en = set(base) | ({extra} if up else set())
                            write(inc, inc_b(vips, en))
                            name = "vc5_" + extra.replace(".", "_")
                            r = lbc.cmd(("enable " if up else "disable ") + name)
                        assert r[-1][:1] == "0", r
                        t1 = time.perf_counter()
                        wait(rtc, extra, up)
                        t2 = time.perf_counter()
                        cmd_ms.append((t1 - t0) * 1e3)
                        (ann if up else wd).append((t2 - t0) * 1e3)
                # All N at once and none at once (start-up, shutdown): one
                # configure for (a), N enable/disable commands for (b).
                bulk = []
                for up in (False, True):
                    t0 = time.perf_counter()
                    if strat == "a":
                        write(inc, inc_a(base if up else []))
                        r = lbc.cmd("configure")
                        assert r[-1][:1] == "0", r
                    else:
                        write(inc, inc_b(vips, set(base) if up else set()))
                        for v in base:
                            r = lbc.cmd(("enable " if up else "disable ") + "vc5_" + v.replace(".", "_"))
                            assert r[-1][:1] == "0", r
                    for v in base:
                        wait(rtc, v, up)
                    bulk.append((time.perf_counter() - t0) * 1e3)
                mem = [l for l in lbc.cmd("show memory") if "Total" in l]
                # Cost of (re)configuring with everything unchanged (e.g. after reconnect).
                t0 = time.perf_counter()
                lbc.cmd("configure")
                noop = (time.perf_counter() - t0) * 1e3
                med = statistics.median
                results.append((strat, n, med(cmd_ms), med(ann), med(wd), noop, bulk[1], bulk[0], mem[0].split()[1:3] if mem else "?"))
                for p in (lb, rt):
                    p.terminate()
                    p.wait()
        print("strategy  VIPs  command(ms)  announce(ms)  withdraw(ms)  no-op configure(ms)  all-up(ms)  all-down(ms)  BIRD memory")
        for s, n, c, a, w, z, bu, bd, m in results:
            print(f"   ({s})    {n:4}   {c:9.2f}  {a:11.2f}  {w:12.2f}  {z:12.2f}  {bu:17.2f}  {bd:11.2f}  {' '.join(m)}")
        print("command/announce/withdraw: medians of 20 changes of one VIP with N already announced")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(["ip", "netns", "del", LB])
        subprocess.run(["ip", "netns", "del", RT])
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    # SIGTERM (e.g. from timeout) must still run the clean-up in main().
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
