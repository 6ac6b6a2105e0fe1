// The device list, and a device's page: interface-rate charts over a
// chosen range, and its newest Wi-Fi stations, wired ports, VLANs and LLDP
// neighbours, or WAN sessions per application.
import { state, every, el, call, when, alertBox, fail, table, orgPicker } from "./core.js";
import { lineChart, formatValue } from "./chart.js";

export async function devicesPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Devices"), orgPicker(), box);
  if (!state.org) return;
  const list = await call("GET", `/api/v1/devices?org=${encodeURIComponent(state.org)}`).catch(fail(box));
  if (!list) return;
  main.append(table("devices", ["Device", "Kind", "Transport", "Connected since", "Last record", "Agent", "Dropped", "Site"],
    list.devices.map((d) => [el("a", { href: `#/device/${encodeURIComponent(d.device)}`, class: "device-link" }, d.device), d.kind,
      d.connected ? (d.transport || "") : "not connected", when(d.connected_since_ms), when(d.last_record_ms),
      d.agent_version || "–", d.health ? String(d.health.dropped_metadata + d.health.dropped_captures) : "0", d.site || "–"])));
}

// Each range with a bucket count that gives round bucket lengths.
// The short ones are for watching a problem as it happens.
const RANGES = [["5m", "5 min", 300e3, 60], ["15m", "15 min", 900e3, 90], ["1h", "1 h", 3600e3, 60], ["6h", "6 h", 6 * 3600e3, 72], ["24h", "24 h", 86400e3, 96], ["7d", "7 d", 7 * 86400e3, 168]];

const list = (xs) => (xs && xs.length ? xs.join(", ") : "–");
const vlans = (ranges) => list((ranges || []).map((r) => (r.first === r.last ? String(r.first) : `${r.first}–${r.last}`)));
const bytes = (n) => (n === null || n === undefined ? "–" : n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${Math.round(n)} B`);
const kbps = (n) => (n === null || n === undefined ? "–" : formatValue(n * 1000, "bps"));
const text = (s) => (s === null || s === undefined || s === "" ? "–" : String(s));

function reportTables(latest) {
  const out = [];
  const seen = (r) => el("p", { class: "muted" }, `Reported ${when(r.observed_at_ms)} (stored ${when(r.received_at_ms)}).`);
  if (latest.wireless) {
    const r = latest.wireless.report;
    out.push(el("h2", {}, "Wi-Fi"), seen(latest.wireless),
      table("radios", ["Radio", "SSID", "BSSID", "Channel", "Width", "Stations"],
        r.radios.map((x) => [x.interface, text(x.ssid), text(x.bssid), text(x.channel), x.width_mhz ? `${x.width_mhz} MHz` : "–", String(x.stations)])),
      el("h3", {}, "Stations"),
      table("stations", ["MAC", "Radio", "SSID", "Addresses", "Hostname", "Signal", "Tx rate", "Rx rate", "Connected", "Tx / Rx"],
        r.stations.map((s) => [s.mac, s.interface, text(s.ssid), list(s.addresses), text(s.hostname),
          s.signal_dbm === null ? "–" : `${s.signal_dbm} dBm`, kbps(s.tx_bitrate_kbps), kbps(s.rx_bitrate_kbps),
          s.connected_secs === null ? "–" : `${Math.round(s.connected_secs / 60)} min`, `${bytes(s.tx_bytes)} / ${bytes(s.rx_bytes)}`])));
  }
  if (latest.client_devices) {
    const r = latest.client_devices.report;
    out.push(el("h3", {}, "Client devices"), seen(latest.client_devices),
      table("client-devices", ["MAC", "Type", "Model", "OS", "Vendor", "Confidence", "From"],
        r.clients.map((c) => [c.mac, text(c.device_type), text(c.model), text(c.os), text(c.vendor),
          `${c.confidence} %`, list(c.evidence)])));
  }
  if (latest.wired) {
    const r = latest.wired.report;
    out.push(el("h2", {}, "Wired"), seen(latest.wired),
      el("h3", {}, "Ports and VLANs"),
      table("ports", ["Port", "PVID", "Untagged VLANs", "Tagged VLANs"], r.ports.map((p) => [p.port, text(p.pvid), vlans(p.untagged), vlans(p.tagged)])),
      el("h3", {}, "LLDP neighbours"),
      table("lldp", ["Local port", "System", "Chassis", "Port", "Management", "Capabilities"],
        r.neighbours.map((n) => [n.local_port, text(n.system_name), text(n.chassis_id), text(n.port_description || n.port_id), list(n.management_addresses), list(n.capabilities)])),
      el("h3", {}, "Learned hosts"),
      table("hosts", ["MAC", "Port", "VLAN", "Addresses", "Hostname"], r.hosts.map((h) => [h.mac, h.port, text(h.vlan), list(h.addresses), text(h.hostname)])));
  }
  if (latest.wan) {
    const r = latest.wan.report;
    out.push(el("h2", {}, "WAN sessions"), seen(latest.wan),
      el("p", {}, `${r.active_sessions} active sessions on ${list(r.wan_interfaces)}${r.untracked_sessions ? `, ${r.untracked_sessions} not tracked` : ""}.`),
      table("wan-sessions", ["Application", "Protocol", "Active", "Started", "Ended", "Out", "In"],
        r.applications.map((a) => [a.application, a.protocol === 6 ? "tcp" : a.protocol === 17 ? "udp" : String(a.protocol),
          String(a.active_sessions), String(a.sessions_started), String(a.sessions_ended), bytes(a.bytes_out), bytes(a.bytes_in)])));
  }
  if (!out.length) out.push(el("p", { id: "no-reports", class: "muted" }, "No Wi-Fi, wired or WAN report from this device in the last 7 days."));
  return out;
}

export async function devicePage(main) {
  const id = decodeURIComponent((location.hash.split("/")[2] || ""));
  const box = alertBox();
  main.replaceChildren(el("p", {}, el("a", { href: "#/devices" }, "← Devices")), el("h1", {}, `Device ${id}`), orgPicker(), box);
  if (!state.org || !id) return;
  const base = `/api/v1/orgs/${encodeURIComponent(state.org)}/devices/${encodeURIComponent(id)}`;
  const detail = await call("GET", base).catch(fail(box));
  if (!detail) return;
  main.append(table("device-detail", ["Kind", "Transport", "Connected since", "Last record", "Agent", "Certificate ends", "Site"],
    [[detail.kind, detail.connected ? (detail.transport || "") : "not connected", when(detail.connected_since_ms), when(detail.last_record_ms),
      detail.agent_version || "–", when(detail.certificate_not_after_ms), detail.site || "–"]]));

  const charts = el("div", { id: "rate-charts", "aria-live": "polite" });
  const chosen = state.range || "1h";
  const buttons = RANGES.map(([key, label]) => el("button", { type: "button", id: `range-${key}`, "aria-pressed": key === chosen ? "true" : "false" }, label));
  const picker = el("div", { class: "ranges", role: "group", "aria-label": "Time range" }, el("span", {}, "Range: "), ...buttons);
  main.append(el("h2", {}, "Interface rates"), picker, charts);
  // Only the newest request draws: an answer for a range clicked away
  // from must not replace the one chosen since.
  let asked = 0;
  async function draw(key) {
    const mine = ++asked;
    state.range = key;
    buttons.forEach((b) => b.setAttribute("aria-pressed", b.id === `range-${key}` ? "true" : "false"));
    const [, label, span, buckets] = RANGES.find((r) => r[0] === key);
    const to = Date.now();
    const rates = await call("GET", `${base}/rates?from_ms=${to - span}&to_ms=${to}&buckets=${buckets}`).catch(fail(box));
    if (!rates || mine !== asked) return;
    const bucketMs = rates.bucket_ms;
    const times = rates.bucket_starts_ms;
    const out = [el("p", { class: "muted", id: "rates-summary" },
      `${rates.reports} counter records over the last ${label}, in ${Math.round(bucketMs / 1000)} s buckets${rates.truncated ? " (scan bound reached: partial)" : ""}.`)];
    if (!rates.interfaces.length) out.push(el("p", { id: "no-rates" }, "No interface counters in this range."));
    for (const [i, f] of rates.interfaces.entries()) {
      const slug = `${i}`;
      out.push(el("section", { class: "interface", "data-interface": f.name },
        el("h3", {}, f.name),
        el("div", { class: "chart-pair" },
          lineChart({ id: `chart-bits-${slug}`, title: `${f.name}: Tx and Rx, bits per second`, times, bucketMs, unit: "bps",
            series: [{ name: "Tx", values: f.tx_bps }, { name: "Rx", values: f.rx_bps }] }),
          lineChart({ id: `chart-errors-${slug}`, title: `${f.name}: errors and drops per second`, times, bucketMs, unit: "/s",
            series: [{ name: "Tx errors", values: f.tx_errors_per_sec }, { name: "Rx errors", values: f.rx_errors_per_sec },
              { name: "Tx drops", values: f.tx_drops_per_sec }, { name: "Rx drops", values: f.rx_drops_per_sec }] }))));
    }
    charts.replaceChildren(...out);
  }
  buttons.forEach((b, i) => b.addEventListener("click", () => draw(RANGES[i][0])));
  await draw(chosen);
  every(30000, () => draw(state.range || "1h"));

  const latest = await call("GET", `${base}/latest`).catch(fail(box));
  if (latest) main.append(el("div", { id: "device-reports" }, ...reportTables(latest)));
}
