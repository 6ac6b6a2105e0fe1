// The audit log: newest entries first, filtered on the collector by actor,
// action, outcome and time, paged back through older entries; a quick
// filter over the rows shown; the hash-chain check for operators.
import { state, el, call, when, alertBox, fail, table, orgPicker } from "./core.js";

// A datetime-local value (the browser's zone) as Unix ms, or null.
function localMs(input) {
  return input.value ? new Date(input.value).getTime() : null;
}

export async function auditPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Audit log"), orgPicker(), box);
  const actor = el("input", { id: "audit-actor", placeholder: "name, support of, console:" });
  const action = el("input", { id: "audit-action", placeholder: "support, consent.set" });
  const outcome = el("select", { id: "audit-outcome" },
    el("option", { value: "" }, "any"), el("option", { value: "done" }, "done"), el("option", { value: "refused" }, "refused"));
  const from = el("input", { id: "audit-from", type: "datetime-local" });
  const to = el("input", { id: "audit-to", type: "datetime-local" });
  const search = el("form", { id: "audit-search", class: "grid" },
    el("label", {}, "Who", actor), el("label", {}, "Action", action), el("label", {}, "Outcome", outcome),
    el("label", {}, "From", from), el("label", {}, "Until", to),
    el("button", { type: "submit", id: "audit-search-submit" }, "Search"));
  const filter = el("input", { id: "audit-filter", placeholder: "filter the rows shown", "aria-label": "Filter the rows shown" });
  const verified = el("p", { id: "audit-verified", "aria-live": "polite" });
  const verify = el("button", { id: "audit-verify", type: "button", onclick: async () => {
    try { const v = await call("GET", "/api/v1/audit/verify"); verified.textContent = `The chain is intact: ${v.entries} entries checked.`; } catch (e) { verified.textContent = e.message; }
  } }, "Verify the chain");
  const holder = el("div");
  const older = el("button", { id: "audit-older", type: "button", hidden: true }, "Older entries");
  main.append(search, el("p", {}, filter, " ", state.session.role === "operator" ? verify : ""), verified, holder, el("p", {}, older));
  let rows = [];
  let before = null;
  const draw = () => {
    const needle = filter.value.toLowerCase();
    const shown = rows.filter((e) => !needle || `${e.actor} ${e.action} ${e.detail}`.toLowerCase().includes(needle));
    holder.replaceChildren(table("audit", ["#", "When", "Who", "What", "Outcome", "Detail"],
      shown.map((e) => [String(e.seq), when(e.at_ms), e.actor, e.action, e.refused ? "refused" : "done", e.detail])));
  };
  const load = async (more) => {
    const q = new URLSearchParams({ newest_first: "true", limit: "100" });
    if (state.org) q.set("org", state.org);
    if (actor.value.trim()) q.set("actor", actor.value.trim());
    if (action.value.trim()) q.set("action", action.value.trim());
    if (outcome.value) q.set("outcome", outcome.value);
    const f = localMs(from), t = localMs(to);
    if (f !== null) q.set("from_ms", String(f));
    if (t !== null) q.set("to_ms", String(t));
    if (more && before !== null) q.set("before_seq", String(before));
    const page = await call("GET", `/api/v1/audit?${q}`).catch(fail(box));
    if (!page) return;
    box.textContent = "";
    rows = more ? rows.concat(page.entries) : page.entries;
    before = page.next_before_seq ?? null;
    older.hidden = before === null;
    draw();
  };
  search.addEventListener("submit", (event) => { event.preventDefault(); load(false); });
  older.addEventListener("click", () => load(true));
  filter.addEventListener("input", draw);
  await load(false);
}
