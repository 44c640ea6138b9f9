// vc5 console: polls /status.json every second and redraws in place.
// Rates are computed here from successive counter snapshots (the
// control loop publishes cumulative counters); the graphs keep the last
// two minutes of them. All text goes through textContent: service
// names, check reasons and log messages come from configuration files
// and from the network, and must never be parsed as HTML.
"use strict";
(function () {
  const POLL_MS = 1000;
  const HISTORY = 120;          // points kept per series (~2 min)
  const STALE_MS = 15000;       // a snapshot older than this is flagged
  const SVG = "http://www.w3.org/2000/svg";

  let prev = null;              // {at, counters: Map(key -> {p, b, f})}
  const hist = new Map();       // key -> [{pps, bps, fps}]
  let last = null;              // last status, to redraw on filter input

  // ---- small helpers ----
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else if (k === "title") e.title = v;
      else e.setAttribute(k, v);
    }
    for (const kid of kids) {
      if (kid === null || kid === undefined) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  const $ = (id) => document.getElementById(id);
  const exact = (n) => Number(n || 0).toLocaleString("en-US");
  function si(n, unit) {
    n = Number(n || 0);
    const steps = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (const [f, p] of steps) if (Math.abs(n) >= f) return (n / f).toFixed(n / f >= 100 ? 0 : 1) + " " + p + unit;
    return (n >= 100 || Number.isInteger(n) ? n.toFixed(0) : n.toFixed(1)) + (unit ? " " + unit : "");
  }
  function iec(n) {
    n = Number(n || 0);
    const steps = [[2 ** 40, "TiB"], [2 ** 30, "GiB"], [2 ** 20, "MiB"], [2 ** 10, "KiB"]];
    for (const [f, p] of steps) if (n >= f) return (n / f).toFixed(1) + " " + p;
    return n + " B";
  }
  function clock(ms) {
    return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
  }
  function duration(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + (d || h || m ? m + "m " : "") + s + "s";
  }
  const hostport = (vip, port, proto) =>
    (vip && vip.includes(":") ? "[" + vip + "]" : vip) + ":" + port + "/" + proto;
  const badge = (state, text) => el("span", { class: "badge s-" + state }, text || state);

  // ---- keys and rates ----
  const epKey = (s) => "svc|" + s.name + "|" + s.vip + "|" + s.port + "|" + s.protocol;
  const realKey = (s, r) => epKey(s) + "|" + r.addr;

  function collect(st) {
    const c = new Map();
    const add = (k, p, b, f) => {
      const o = c.get(k) || { p: 0, b: 0, f: 0 };
      o.p += p; o.b += b; o.f += f; c.set(k, o);
    };
    for (const s of st.services) {
      const k = s.counters;
      add("total", k.packets, k.bytes, k.new_flows);
      add("vip|" + s.vip, k.packets, k.bytes, k.new_flows);
      add(epKey(s), k.packets, k.bytes, k.new_flows);
      add("drop|" + s.vip, s.dropped.packets, s.dropped.bytes, 0);
      add("drop", s.dropped.packets, s.dropped.bytes, 0);
      for (const r of s.reals) add(realKey(s, r), r.counters.packets, r.counters.bytes, r.counters.new_flows);
    }
    for (const [reason, g] of Object.entries(st.global)) add("g|" + reason, g.packets, g.bytes, 0);
    return c;
  }

  // Pushes one rate point per series when the snapshot is newer than the
  // previous one (an unchanged snapshot is not a zero rate). A counter
  // that went down (vc5d restarted) restarts its series.
  function updateRates(st) {
    const counters = collect(st);
    if (prev && st.at_ms > prev.at) {
      const dt = (st.at_ms - prev.at) / 1000;
      for (const [k, c] of counters) {
        const p = prev.counters.get(k);
        if (!p) continue;
        if (c.p < p.p || c.b < p.b || c.f < p.f) { hist.delete(k); continue; }
        const h = hist.get(k) || [];
        h.push({ pps: (c.p - p.p) / dt, bps: 8 * (c.b - p.b) / dt, fps: (c.f - p.f) / dt });
        if (h.length > HISTORY) h.splice(0, h.length - HISTORY);
        hist.set(k, h);
      }
      for (const k of hist.keys()) if (!counters.has(k)) hist.delete(k);
    }
    if (!prev || st.at_ms > prev.at) prev = { at: st.at_ms, counters };
  }
  function rate(k) {
    const h = hist.get(k);
    return h && h.length ? h[h.length - 1] : null;
  }
  const showRate = (k, f, unit) => { const r = rate(k); return r ? si(r[f], unit) : "–"; };

  // ---- graphs ----
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  function points(series, w, h, max, pad) {
    const step = (w - pad) / (HISTORY - 1);
    const off = HISTORY - series.length;
    return series.map((v, i) => [(pad + (off + i) * step).toFixed(1), (h - 1 - (v / max) * (h - 14)).toFixed(1)]);
  }
  function drawGraph(node, series, unit, color) {
    const w = 600, h = 150, pad = 0;
    const max = niceMax(Math.max(0, ...series));
    node.replaceChildren();
    for (const f of [0, 0.5, 1]) {
      const y = (h - 1 - f * (h - 14)).toFixed(1);
      node.append(svg("line", { x1: 0, x2: w, y1: y, y2: y, stroke: "#dde1e8", "stroke-width": 1, "vector-effect": "non-scaling-stroke" }));
      const t = svg("text", { x: 4, y: Number(y) - 3 });
      t.textContent = si(max * f, unit);
      node.append(t);
    }
    const ago = svg("text", { x: w - 4, y: h - 4, "text-anchor": "end" });
    ago.textContent = series.length > 1 ? "now" : "collecting…";
    node.append(ago);
    if (series.length < 2) return;
    const pts = points(series, w, h, max, pad);
    const line = pts.map((p) => p.join(",")).join(" ");
    node.append(svg("polygon", { points: pts[0][0] + "," + (h - 1) + " " + line + " " + pts[pts.length - 1][0] + "," + (h - 1), fill: color, "fill-opacity": 0.12 }));
    node.append(svg("polyline", { points: line, fill: "none", stroke: color, "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
  }
  function spark(k) {
    const s = svg("svg", { class: "spark", viewBox: "0 0 120 24", preserveAspectRatio: "none", role: "img", "aria-label": "packets per second, last two minutes" });
    // A faint frame, so that a short history reads as "recent" rather
    // than as a glitch at the right edge.
    s.append(svg("rect", { x: 0, y: 0, width: 120, height: 24, fill: "#f0f2f6" }));
    const series = (hist.get(k) || []).map((r) => r.pps);
    if (series.length < 2) return s;
    const max = niceMax(Math.max(0, ...series));
    const step = 120 / (HISTORY - 1), off = HISTORY - series.length;
    const line = series.map((v, i) => ((off + i) * step).toFixed(1) + "," + (23 - (v / max) * 21).toFixed(1)).join(" ");
    s.append(svg("polyline", { points: line, fill: "none", stroke: "#3451b2", "stroke-width": 1.5, "vector-effect": "non-scaling-stroke" }));
    return s;
  }

  // ---- rendering ----
  function renderHeader(st) {
    $("version").textContent = "v" + st.version;
    $("config").textContent = st.config;
    $("uptime").textContent = "up " + duration(st.at_ms - st.started_ms);
    $("interfaces").textContent = st.interfaces.map((i) => i.name + " (" + i.mode + ")").join(", ") || "no interface";
    const up = st.rhi.sessions.filter((s) => s.up).length;
    $("rhi").textContent = "RHI: " + st.rhi.mode + " " + up + "/" + st.rhi.sessions.length + " up";
    const fs = st.flow_sync;
    $("hold").replaceChildren(fs && fs.holding_announcements
      ? badge("pending", "holding announcements for flow sync, at most until " + clock(fs.holding_until_ms)) : "");
    // A refused reload leaves the old configuration running: say so until one succeeds.
    const last = st.reloads && st.reloads.last;
    $("reload").replaceChildren(last && !last.ok
      ? el("span", { class: "badge s-failed", title: last.error || "" }, "reload refused at " + clock(last.at_ms)) : "");
  }
  function tile(k, v, cls) {
    return el("div", { class: "tile" }, el("div", { class: "k" }, k), el("div", { class: "v " + (cls || "") }, v));
  }
  function renderSummary(st) {
    const ann = st.vips.filter((v) => v.announced).length;
    const up = st.services.filter((s) => s.state === "up").length;
    const healthy = st.services.reduce((a, s) => a + s.healthy, 0);
    const total = st.services.reduce((a, s) => a + s.total, 0);
    $("summary").replaceChildren(
      tile("Packets/s", showRate("total", "pps", "")),
      tile("Bits/s", showRate("total", "bps", "b/s")),
      tile("New flows/s", showRate("total", "fps", "")),
      tile("Dropped (no real)/s", showRate("drop", "pps", ""), rate("drop") && rate("drop").pps > 0 ? "bad" : ""),
      tile("VIPs announced", ann + " / " + st.vips.length, ann < st.vips.length ? "bad" : "ok"),
      tile("Services up", up + " / " + st.services.length, up < st.services.length ? "bad" : "ok"),
      tile("Reals usable", healthy + " / " + total, healthy < total ? "bad" : "ok"),
    );
    const h = hist.get("total") || [];
    drawGraph($("graph-pps"), h.map((r) => r.pps), "", "#3451b2");
    drawGraph($("graph-bps"), h.map((r) => r.bps), "b/s", "#0f8a7e");
  }
  function routeBadge(v) {
    if (v.announced && v.announceable) return badge("announced");
    if (v.announced) return badge("drained", "announced, withdrawing");
    if (v.announceable) return badge("pending", "pending");
    return badge("withdrawn");
  }
  function renderVips(st) {
    const rows = st.vips.map((v) => {
      const eps = st.services.filter((s) => s.vip === v.vip);
      const svcs = el("span", {}, ...eps.flatMap((s, i) => [i ? ", " : "", s.port + "/" + s.protocol + " ", badge(s.state)]));
      const dropped = eps.reduce((a, s) => a + s.dropped.packets, 0);
      return el("tr", { class: "vip", "data-vip": v.vip || "" },
        el("td", { class: "mono" }, v.vip),
        el("td", { class: "route" }, routeBadge(v)),
        el("td", {}, svcs),
        el("td", { class: "num" }, showRate("vip|" + v.vip, "pps", "")),
        el("td", { class: "num" }, showRate("vip|" + v.vip, "bps", "b/s")),
        el("td", { class: "num" }, showRate("vip|" + v.vip, "fps", "")),
        el("td", { class: "num" + (dropped ? " bad" : "") }, exact(dropped)),
        el("td", {}, spark("vip|" + v.vip)));
    });
    $("vips").tBodies[0].replaceChildren(...rows);
  }
  function checksCell(r, now) {
    if (!r.checks.length) return el("td", { class: "dim" }, "no checks");
    return el("td", { class: "checks" }, ...r.checks.map((c) => el("div", {},
      el("span", { class: c.passing ? "ok" : "bad" }, c.passing ? "✓ " : "✗ "),
      c.name,
      // Passing with a failed last attempt (not yet `fall` of them), or
      // failing with a passed one (not yet `rise`): show both.
      c.passing ? el("span", { class: "dim" }, " " + c.latency_ms.toFixed(1) + " ms" + (c.reason ? " — last attempt: " + c.reason : ""))
        : el("span", { class: "reason" }, " — " + (c.reason || "failing, last attempt passed")),
      c.at_ms ? el("span", { class: "dim" }, " · " + duration(now - c.at_ms) + " ago") : el("span", { class: "dim" }, " · not yet"))));
  }
  // "l2", or a tunnel with its UDP port: "gue:6080".
  const forwardName = (s) => s.forward + (s.tunnel_port ? ":" + s.tunnel_port : "");
  // The next hop: the real's MAC when on-link, "via GATEWAY" and the
  // gateway's MAC otherwise; why not, when it cannot be reached.
  function hopCell(r) {
    if (!r.next_hop) return el("td", { class: "hop mono bad", title: r.reason }, "unreachable" + (r.reason ? ": " + r.reason : ""));
    const via = r.next_hop !== r.addr ? "via " + r.next_hop + " " : "";
    return el("td", { class: "hop mono dim" }, via + (r.mac || "") + (r.vlan ? " vlan " + r.vlan : ""));
  }
  function matches(s, f) {
    if (!f) return true;
    const hay = [s.name, s.desc, s.vip, String(s.port), s.protocol, hostport(s.vip, s.port, s.protocol), ...s.reals.map((r) => r.addr || "")].join(" ").toLowerCase();
    return f.toLowerCase().split(/\s+/).every((w) => hay.includes(w));
  }
  function renderServices(st) {
    const f = $("filter").value.trim();
    const cards = st.services.filter((s) => matches(s, f)).map((s) => {
      const ep = hostport(s.vip, s.port, s.protocol);
      const key = epKey(s);
      const head = el("div", { class: "head" },
        el("span", { class: "name" }, s.name),
        s.desc ? el("span", { class: "dim" }, s.desc) : null,
        el("span", { class: "mono" }, ep),
        el("span", { class: "forward dim" }, forwardName(s)),
        badge(s.state),
        el("span", { class: s.healthy < s.need ? "bad" : "" }, s.healthy + "/" + s.total + " reals usable, need " + s.need),
        el("span", {}, showRate(key, "pps", "") + " pkt/s · " + showRate(key, "bps", "b/s") + " · " + showRate(key, "fps", "") + " new/s"),
        s.dropped.packets ? el("span", { class: "bad" }, exact(s.dropped.packets) + " dropped (no real)") : null,
        spark(key));
      const rows = s.reals.map((r) => el("tr", { class: "real", "data-service": s.name, "data-endpoint": ep, "data-real": r.addr || "" },
        el("td", { class: "mono" }, r.addr || "?"),
        el("td", { class: "state" }, badge(r.state)),
        el("td", { class: "health " + (r.healthy ? "ok" : "bad") }, r.healthy ? "healthy" : "unhealthy"),
        checksCell(r, st.at_ms),
        el("td", { class: "num" }, r.weight),
        hopCell(r),
        el("td", { class: "num packets" }, exact(r.counters.packets)),
        el("td", { class: "num bytes", title: exact(r.counters.bytes) + " bytes" }, iec(r.counters.bytes)),
        el("td", { class: "num flows" }, exact(r.counters.new_flows)),
        el("td", { class: "num" }, showRate(realKey(s, r), "pps", "")),
        el("td", { class: "num" }, showRate(realKey(s, r), "bps", "b/s")),
        el("td", {}, spark(realKey(s, r)))));
      const table = el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, ...["Real", "State", "Health", "Checks (last result)", "Weight", "Next hop", "Packets", "Bytes", "New flows", "Packets/s", "Bits/s", "Last 2 min"]
          .map((t, i) => el("th", { class: i >= 4 && i !== 5 && i !== 11 ? "num" : "" }, t)))),
        el("tbody", {}, ...rows));
      return el("div", { class: "service", "data-service": s.name, "data-endpoint": ep }, head, table);
    });
    if (!cards.length) cards.push(el("p", { class: "dim" }, f ? "No service matches the filter." : "No service configured."));
    $("services").replaceChildren(...cards);
  }
  function renderSessions(st) {
    const rows = st.rhi.sessions.map((s) => el("tr", {},
      el("td", {}, s.peer), el("td", {}, badge(s.up ? "up" : "down", s.state)),
      el("td", { class: "reason" }, s.last_error)));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 3, class: "dim" }, "no session (" + st.rhi.mode + ")")));
    $("sessions").tBodies[0].replaceChildren(...rows);
  }
  const ms = (us) => (us / 1000).toFixed(us < 10000 ? 2 : 0);
  function renderFlowSync(st) {
    const fs = st.flow_sync;
    const peers = $("flowsync-peers");
    if (!fs || !fs.configured) {
      $("flowsync").replaceChildren("Not configured (multicast and flow_sync_key).");
      peers.hidden = true;
      return;
    }
    peers.hidden = false;
    const l = fs.local;
    const line = [
      "group " + fs.group + " · ",
      badge(l.running ? "up" : "down", l.running ? "vc5-flowsync " + l.state : "vc5-flowsync not running"),
      fs.holding_announcements ? el("span", { class: "bad" }, " · holding VIP announcements until resynced, at most until " + clock(fs.holding_until_ms)) : null,
    ];
    if (l.started_ms) {
      line.push(" · sender " + l.sender + ", epoch " + new Date(l.epoch / 1e6).toISOString() +
        " · sent " + exact(l.sent_datagrams) + " datagrams, " + exact(l.sent_records) + " records");
      line.push(el("span", { class: l.lost_events ? "bad" : "" }, " · " + exact(l.lost_events) + " flow events lost"));
      if (l.heartbeat_ms) line.push(el("span", { class: "dim" }, " · heartbeat " + duration(st.at_ms - l.heartbeat_ms) + " ago"));
    }
    $("flowsync").replaceChildren(...line.filter((x) => x !== null));
    const rejects = (r) => Object.entries(r).filter(([, n]) => n > 0).map(([k, n]) => k + " " + exact(n)).join(", ");
    const rows = fs.peers.map((p) => el("tr", { class: "peer", "data-peer": p.addr || "" },
      el("td", { class: "mono" }, p.addr || "?"),
      el("td", { class: "mono dim" }, p.sender),
      el("td", { class: "num" }, exact(p.datagrams)),
      el("td", { class: "num" }, exact(p.records)),
      el("td", { class: "num" }, exact(p.written)),
      el("td", { class: "num" + (p.gaps ? " bad" : "") }, exact(p.gaps)),
      el("td", { class: "num" + (p.unknown_real ? " bad" : "") }, exact(p.unknown_real)),
      el("td", { class: "num" + (p.rate_limited ? " bad" : "") }, exact(p.rate_limited)),
      el("td", { class: "reason rejects" }, rejects(p.rejects)),
      el("td", { class: "num" }, (p.last_heard_ago_ms < 10000 ? (p.last_heard_ago_ms / 1000).toFixed(1) + "s" : duration(p.last_heard_ago_ms)) + " ago"),
      el("td", { class: "num" }, ms(p.delay_p50_us) + " / " + ms(p.delay_p99_us) + " / " + ms(p.delay_max_us) + " ms")));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 11, class: "dim" }, "no peer heard")));
    peers.tBodies[0].replaceChildren(...rows);
  }
  function renderGlobal(st) {
    const rows = Object.entries(st.global).map(([k, c]) => el("tr", {},
      el("td", { class: "mono" }, k), el("td", { class: "num" }, exact(c.packets)),
      el("td", { class: "num", title: exact(c.bytes) + " bytes" }, iec(c.bytes)),
      el("td", { class: "num" }, showRate("g|" + k, "pps", ""))));
    $("global").tBodies[0].replaceChildren(...rows);
  }
  function renderEvents(st) {
    const items = [...st.events].reverse().map((e) => el("li", {},
      el("span", { class: "t" }, clock(e.at_ms)),
      el("span", { class: "l-" + e.level }, e.level), " ", e.message));
    if (!items.length) items.push(el("li", { class: "dim" }, "nothing yet"));
    $("events").replaceChildren(...items);
  }
  function render(st) {
    renderHeader(st);
    renderSummary(st);
    renderVips(st);
    renderServices(st);
    renderSessions(st);
    renderFlowSync(st);
    renderGlobal(st);
    renderEvents(st);
  }

  function setLive(ok, text) {
    const n = $("live");
    n.className = "live" + (ok ? "" : " stale");
    n.textContent = text;
  }

  async function tick() {
    try {
      const r = await fetch("/status.json", { cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const st = await r.json();
      updateRates(st);
      last = st;
      render(st);
      const age = Date.now() - st.at_ms;
      if (age > STALE_MS) setLive(false, "stale: snapshot " + duration(age) + " old");
      else setLive(true, "live · " + clock(st.at_ms));
    } catch (e) {
      setLive(false, "cannot reach vc5d: " + e.message);
    } finally {
      setTimeout(tick, POLL_MS);
    }
  }
  $("filter").addEventListener("input", () => { if (last) renderServices(last); });
  tick();
})();
