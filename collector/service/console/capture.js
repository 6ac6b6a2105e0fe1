// Packet capture: the consent switch (and who last changed it), starting a
// capture, its progress, a capture's stored packets decoded, the stored
// headers as pcapng.
import { state, every, el, call, when, alertBox, fail, table, orgPicker } from "./core.js";

const PAGE = 200;

function consentNote(org) {
  if (!org.consent_changed_at_ms) return "Never changed.";
  return `Changed${org.consent_changed_by ? ` by ${org.consent_changed_by}` : ""} at ${when(org.consent_changed_at_ms)}.`;
}

// One page of a capture's packets, decoded from the stored headers.
async function showPackets(holder, base, device, id, offset, box) {
  const page = await call("GET", `${base}/captures/${encodeURIComponent(device)}/${id}/packets?offset=${offset}&limit=${PAGE}`).catch(fail(box));
  if (!page) return;
  const addr = (ip, port) => (ip ? (port === null ? ip : ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`) : "–");
  const rows = page.packets.map((p) => [
    new Date(p.timestamp_us / 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3 }),
    addr(p.src_ip, p.src_port) === "–" ? (p.src_mac || "–") : addr(p.src_ip, p.src_port),
    addr(p.dst_ip, p.dst_port) === "–" ? (p.dst_mac || "–") : addr(p.dst_ip, p.dst_port),
    p.protocol, p.tcp_flag_names || "–", String(p.captured_len), String(p.original_len),
    el("span", { class: "badge", title: "Only the headers were kept; the payload never left the device" }, p.headers_only ? "headers only" : "full")]);
  const nav = [];
  if (offset > 0) nav.push(el("button", { type: "button", id: "packets-prev", onclick: () => showPackets(holder, base, device, id, Math.max(0, offset - PAGE), box) }, "Previous"));
  if (offset + page.packets.length < page.total) nav.push(el("button", { type: "button", id: "packets-next", onclick: () => showPackets(holder, base, device, id, offset + PAGE, box) }, "Next"));
  holder.replaceChildren(
    el("h2", { id: "packets-heading", tabindex: "-1" }, `Capture ${id} on ${device} (${page.interface})`),
    el("p", { class: "muted", id: "packets-count" }, page.total ? `Packets ${offset + 1}–${offset + page.packets.length} of ${page.total}. Headers only: the payload was cut on the device.` : "No packets stored for this capture (yet)."),
    table("packets", ["Time", "Source", "Destination", "Protocol", "TCP flags", "Captured", "Original", "Kept"], rows),
    el("p", { class: "inline" }, ...nav));
}

export async function capturePage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Packet capture"), orgPicker(), box);
  if (!state.org) return;
  const base = `/api/v1/orgs/${encodeURIComponent(state.org)}`;
  const org = await call("GET", base).catch(fail(box));
  if (!org) return;
  const consent = el("input", { type: "checkbox", role: "switch", id: "consent-toggle", checked: org.capture_consent });
  consent.addEventListener("change", async () => {
    try {
      await call("PUT", `${base}/consent`, { capture: consent.checked });
      box.textContent = "";
      const now = await call("GET", base).catch(() => null);
      if (now) note.textContent = consentNote(now);
    } catch (e) { consent.checked = !consent.checked; box.textContent = e.message; }
  });
  const note = el("span", { id: "consent-changed", class: "muted" }, consentNote(org));
  main.append(el("p", {}, el("label", { class: "check" }, consent, " Capture consent (header-only captures allowed on this organisation's devices)"), " ", note));
  const devices = await call("GET", `/api/v1/devices?org=${encodeURIComponent(state.org)}`).catch(() => ({ devices: [] }));
  const device = el("select", { id: "capture-device" }, ...devices.devices.filter((d) => d.connected).map((d) => el("option", { value: d.device }, d.device)));
  const form = el("form", { id: "capture-form", class: "grid" },
    el("label", {}, "Device", device),
    el("label", {}, "Interface", el("input", { id: "capture-interface", name: "interface", value: "eth0", required: true })),
    el("label", {}, "Filter (BPF)", el("input", { id: "capture-filter", name: "filter", placeholder: "tcp port 443" })),
    el("label", {}, "Duration (s)", el("input", { id: "capture-duration", name: "duration", type: "number", min: "1", value: "30" })),
    el("label", {}, "Packet limit", el("input", { id: "capture-packets", name: "packets", type: "number", min: "1", value: "1000" })),
    el("button", { type: "submit", id: "capture-start" }, "Start capture"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await call("POST", `${base}/captures`, { device: device.value, interface: form.interface.value, filter: form.filter.value,
        duration_secs: Number(form.duration.value), max_packets: Number(form.packets.value) });
      box.textContent = "";
      refresh();
    } catch (e) { box.textContent = e.message; }
  });
  const list = el("div", { id: "capture-progress", "aria-live": "polite" });
  const download = el("a", { id: "pcapng-download", href: `${base}/export?kind=capture&format=pcapng`, download: `${state.org}-captures.pcapng` }, "Download stored captures (pcapng, headers only)");
  const packets = el("div", { id: "capture-packets-view", "aria-live": "polite" });
  main.append(form, el("h2", {}, "Captures"), list, el("p", {}, download), packets);
  let last = null;
  async function refresh() {
    const captures = await call("GET", `${base}/captures`).catch(fail(box));
    if (!captures) return;
    // Unchanged: keep the table, and with it the keyboard focus.
    const seen = JSON.stringify(captures.captures);
    if (seen === last) return;
    last = seen;
    list.replaceChildren(table("captures", ["Id", "Device", "State", "Packets", "Header bytes", "Reason"],
      captures.captures.map((c) => [el("button", { type: "button", class: "link", "data-capture": String(c.id), "aria-label": `Show the packets of capture ${c.id}`,
        onclick: async () => { await showPackets(packets, base, c.device, c.id, 0, box); const h = document.getElementById("packets-heading"); if (h) h.focus(); } }, String(c.id)),
      c.device, c.state, c.packets === null ? "–" : String(c.packets),
        c.header_bytes === null ? "–" : String(c.header_bytes), c.reason || ""])));
  }
  await refresh();
  every(2000, refresh);
}
