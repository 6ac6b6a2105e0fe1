// The audit log, with a filter and the chain check.
import { state, el, call, when, alertBox, fail, table, orgPicker } from "./core.js";

export async function auditPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Audit log"), orgPicker(), box);
  const query = state.org ? `?org=${encodeURIComponent(state.org)}` : "";
  const filter = el("input", { id: "audit-filter", placeholder: "filter by actor, action or text", "aria-label": "Filter" });
  const verified = el("p", { id: "audit-verified", "aria-live": "polite" });
  const verify = el("button", { id: "audit-verify", onclick: async () => {
    try { const v = await call("GET", "/api/v1/audit/verify"); verified.textContent = `The chain is intact: ${v.entries} entries checked.`; } catch (e) { verified.textContent = e.message; }
  } }, "Verify the chain");
  const holder = el("div");
  main.append(el("p", {}, filter, " ", state.session.role === "operator" ? verify : ""), verified, holder);
  const page = await call("GET", `/api/v1/audit${query}`).catch(fail(box));
  if (!page) return;
  const draw = () => {
    const needle = filter.value.toLowerCase();
    const rows = page.entries.filter((e) => !needle || `${e.actor} ${e.action} ${e.detail}`.toLowerCase().includes(needle)).reverse();
    holder.replaceChildren(table("audit", ["#", "When", "Who", "What", "Outcome", "Detail"],
      rows.map((e) => [String(e.seq), when(e.at_ms), e.actor, e.action, e.refused ? "refused" : "done", e.detail])));
  };
  filter.addEventListener("input", draw);
  draw();
}
