// The device list.
import { state, el, call, when, alertBox, fail, table, orgPicker } from "./core.js";

export async function devicesPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Devices"), orgPicker(), box);
  if (!state.org) return;
  const list = await call("GET", `/api/v1/devices?org=${encodeURIComponent(state.org)}`).catch(fail(box));
  if (!list) return;
  main.append(table("devices", ["Device", "Kind", "Transport", "Connected since", "Last record", "Agent", "Dropped"],
    list.devices.map((d) => [d.device, d.kind, d.connected ? (d.transport || "") : "not connected", when(d.connected_since_ms), when(d.last_record_ms),
      d.agent_version || "–", d.health ? String(d.health.dropped_metadata + d.health.dropped_captures) : "0"])));
}
