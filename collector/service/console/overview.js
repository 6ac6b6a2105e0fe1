// The organisation page: its consent, grant, data policy and retention.
import { state, el, call, when, alertBox, fail, table, orgPicker } from "./core.js";

export async function overviewPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Organisation"), orgPicker(), box);
  if (!state.org) return;
  const org = await call("GET", `/api/v1/orgs/${encodeURIComponent(state.org)}`).catch(fail(box));
  if (!org) return;
  main.append(table("org-status", ["Setting", "Value"], [
    ["Devices connected", String(org.connected_devices)],
    ["Capture consent", org.capture_consent ? "on" : "off"],
    ["Support access until", org.support_until_ms ? when(org.support_until_ms) : "no grant"],
    ["Fields not collected", org.omitted_fields.join(", ") || "none"],
    ["MAC addresses", org.pseudonymise_macs ? "pseudonymised" : "as seen"],
    ...Object.entries(org.retention_days).map(([kind, days]) => [`Retention of ${kind}`, `${days} days`]),
  ]));
}
