// Operators: every organisation at a glance (devices, stored data,
// consent and who changed it, support grant, retention).
import { el, call, when, alertBox, fail, table, state, hooks } from "./core.js";

const size = (n) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${Math.round(n)} B`);

export async function orgsPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Organisations"), box);
  const list = await call("GET", "/api/v1/orgs").catch(fail(box));
  if (!list) return;
  const open = (org) => el("button", { type: "button", class: "link", "data-org": org, onclick: () => { state.org = org; location.hash = "#/"; hooks.render(); } }, org);
  main.append(table("orgs", ["Organisation", "Devices registered", "Connected", "Records received", "Stored", "Capture consent", "Support until", "Retention"],
    list.orgs.map((o) => {
      const connected = Object.entries(o.connected_by_kind).map(([kind, n]) => `${n} ${kind}`).join(", ") || "none";
      const stored = Object.entries(o.stored_bytes).map(([kind, n]) => `${kind} ${size(n)} (${o.stored_segments[kind]} segments)`).join(", ");
      const consent = `${o.capture_consent ? "on" : "off"}${o.consent_changed_at_ms ? ` (changed${o.consent_changed_by ? " by " + o.consent_changed_by : ""} ${when(o.consent_changed_at_ms)})` : ""}`;
      const retention = Object.entries(o.retention_days).map(([kind, d]) => `${kind} ${d} d`).join(", ");
      return [open(o.org), String(o.registered_devices), connected, String(o.records_received), stored, consent,
        o.support_until_ms ? when(o.support_until_ms) : "no grant", retention];
    })));
  main.append(el("p", { class: "muted" }, "Records received count since the collector started; stored sizes are the segment files on disk."));
}
