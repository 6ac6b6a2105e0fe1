// Support access: grant, revoke, countdown.
import { state, el, call, when, alertBox, fail, orgPicker } from "./core.js";

export async function supportPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Support access"), orgPicker(), box);
  if (!state.org) return;
  const base = `/api/v1/orgs/${encodeURIComponent(state.org)}`;
  const org = await call("GET", base).catch(fail(box));
  if (!org) return;
  const countdown = el("p", { id: "grant-countdown", "aria-live": "polite" });
  const tick = () => {
    const left = org.support_until_ms ? org.support_until_ms - Date.now() : 0;
    if (left <= 0) { countdown.textContent = "No support grant is active."; return; }
    const h = Math.floor(left / 3600000), m = Math.floor((left % 3600000) / 60000), s = Math.floor((left % 60000) / 1000);
    countdown.textContent = `Support may read this organisation's data for ${h} h ${m} min ${s} s more (until ${when(org.support_until_ms)}).`;
  };
  tick();
  state.timers.push(setInterval(tick, 1000));
  const hours = el("input", { id: "grant-hours", type: "number", min: "1", max: "720", value: "4" });
  const form = el("form", { id: "grant-form", class: "inline" }, el("label", {}, "Grant for ", hours, " hours "), el("button", { type: "submit", id: "grant-submit" }, "Grant"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try { const g = await call("POST", `${base}/support`, { hours: Number(hours.value) }); org.support_until_ms = g.until_ms; tick(); box.textContent = ""; } catch (e) { box.textContent = e.message; }
  });
  const revoke = el("button", { id: "grant-revoke", onclick: async () => {
    try { await call("DELETE", `${base}/support`); org.support_until_ms = null; tick(); box.textContent = ""; } catch (e) { box.textContent = e.message; }
  } }, "Revoke");
  main.append(countdown, form, el("p", {}, revoke));
}
