// Packet capture: the consent switch, starting a capture, its progress, the
// stored headers as pcapng.
import { state, every, el, call, alertBox, fail, table, orgPicker } from "./core.js";

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
    } catch (e) { consent.checked = !consent.checked; box.textContent = e.message; }
  });
  main.append(el("p", {}, el("label", { class: "check" }, consent, " Capture consent (header-only captures allowed on this organisation's devices)")));
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
  main.append(form, el("h2", {}, "Captures"), list, el("p", {}, download));
  async function refresh() {
    const captures = await call("GET", `${base}/captures`).catch(fail(box));
    if (!captures) return;
    list.replaceChildren(table("captures", ["Id", "Device", "State", "Packets", "Header bytes", "Reason"],
      captures.captures.map((c) => [String(c.id), c.device, c.state, c.packets === null ? "–" : String(c.packets),
        c.header_bytes === null ? "–" : String(c.header_bytes), c.reason || ""])));
  }
  await refresh();
  every(2000, refresh);
}
