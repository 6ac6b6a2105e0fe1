// Support access: grant for some hours, revoke, a countdown on the
// collector's clock, and what support staff did under each grant.
import { state, every, el, call, when, alertBox, fail, table, orgPicker } from "./core.js";

function duration(ms) {
  const h = Math.floor(ms / 3600000), m = Math.floor((ms % 3600000) / 60000), s = Math.floor((ms % 60000) / 1000);
  return `${h} h ${m} min ${s} s`;
}

export async function supportPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Support access"), orgPicker(), box);
  if (!state.org) return;
  const base = `/api/v1/orgs/${encodeURIComponent(state.org)}`;
  const org = await call("GET", base).catch(fail(box));
  if (!org) return;
  // The collector's clock minus the browser's, so the countdown ends when
  // the collector says the grant ends.
  let skew = 0;
  const countdown = el("p", { id: "grant-countdown", "aria-live": "polite" });
  const tick = () => {
    const left = org.support_until_ms ? org.support_until_ms - (Date.now() + skew) : 0;
    if (left <= 0) { countdown.textContent = "No support grant is active."; return; }
    const scope = (org.support_kinds || []).join(", ") + ((org.support_devices || []).length ? ` on devices ${org.support_devices.join(", ")}` : " on all devices") +
      ((org.support_sites || []).length ? ` at sites ${org.support_sites.join(", ")}` : "");
    countdown.textContent = `Support may read this organisation's data for ${duration(left)} more (until ${when(org.support_until_ms)}): ${scope}.`;
  };
  const hours = el("input", { id: "grant-hours", type: "number", min: "1", max: "720", value: "4" });
  // What the grant includes: devices and status always; captures only
  // when ticked (the default of a grant is devices, metadata, exports).
  const kind = (name, label, checked) => {
    const box = el("input", { type: "checkbox", id: `grant-kind-${name}`, value: name });
    box.checked = checked;
    return [box, el("label", { for: `grant-kind-${name}` }, ` ${label} `)];
  };
  const kinds = [kind("metadata", "metadata", true), kind("captures", "captures", false), kind("exports", "subject exports", true)];
  const devices = el("input", { id: "grant-devices", type: "text", placeholder: "all devices", size: "24" });
  const sites = el("input", { id: "grant-sites", type: "text", placeholder: "all sites", size: "16" });
  const form = el("form", { id: "grant-form", class: "inline" }, el("label", {}, "Grant for ", hours, " hours "),
    el("span", {}, "devices and status, ", ...kinds.flat()),
    el("label", {}, " on devices ", devices, " "), el("label", {}, " at sites ", sites, " "),
    el("button", { type: "submit", id: "grant-submit" }, "Grant"));
  const revoke = el("button", { id: "grant-revoke", type: "button" }, "Revoke");
  const history = el("div", { id: "grant-history" });
  main.append(countdown, form, el("p", {}, revoke), el("h2", {}, "Grants and what support did"), history);

  const refresh = async () => {
    const activity = await call("GET", `${base}/support/activity`).catch(fail(box));
    if (!activity) return;
    skew = activity.now_ms - Date.now();
    const now = await call("GET", base).catch(fail(box));
    if (now) Object.assign(org, now);
    const current = activity.grants.find((g) => g.active);
    org.support_until_ms = current ? current.until_ms : null;
    tick();
    const sections = activity.grants.map((g) => {
      const end = g.ended_at_ms ? `ended early ${when(g.ended_at_ms)} by ${g.ended_by}` : g.active ? `runs until ${when(g.until_ms)}` : `ran out ${when(g.until_ms)}`;
      const rows = g.actions.map((e) => [String(e.seq), when(e.at_ms), e.actor, e.action, e.refused ? "refused" : "done", e.detail]);
      return el("section", { class: "grant", id: `grant-${g.granted_seq}` },
        el("h3", {}, `${g.hours} h granted ${when(g.granted_at_ms)} by ${g.granted_by}${g.active ? " (active)" : ""}`),
        el("p", { class: "grant-scope" }, `Includes ${g.scope || "devices, metadata, exports on all devices"}.`),
        el("p", { class: "muted" }, end),
        rows.length ? table(`grant-actions-${g.granted_seq}`, ["#", "When", "Who", "What", "Outcome", "Detail"], rows) : el("p", {}, "Support did nothing under this grant."),
        g.more_actions ? el("p", { class: "muted" }, `${g.more_actions} more actions; see the audit log.`) : "");
    });
    if (!sections.length) sections.push(el("p", {}, "No support grant on record."));
    const refused = activity.refused_outside_grants;
    if (refused.length) {
      sections.push(el("h3", {}, "Refused while no grant was active"),
        table("support-refused", ["#", "When", "Who", "What", "Why"], refused.map((e) => [String(e.seq), when(e.at_ms), e.actor, e.action, e.detail])));
    }
    history.replaceChildren(...sections);
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = ["devices", ...kinds.map(([c]) => c).filter((c) => c.checked).map((c) => c.value)];
    const only = devices.value.split(",").map((d) => d.trim()).filter((d) => d);
    const at = sites.value.split(",").map((d) => d.trim()).filter((d) => d);
    const body = { hours: Number(hours.value), kinds: chosen, devices: only, sites: at };
    try { await call("POST", `${base}/support`, body); box.textContent = ""; } catch (e) { box.textContent = e.message; }
    await refresh();
  });
  revoke.addEventListener("click", async () => {
    try { await call("DELETE", `${base}/support`); box.textContent = ""; } catch (e) { box.textContent = e.message; }
    await refresh();
  });
  tick();
  await refresh();
  every(1000, tick);
}
