// API tokens.
import { el, call, when, alertBox, fail, table, hooks } from "./core.js";

export async function tokensPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "API tokens"), box);
  const list = await call("GET", "/api/v1/tokens").catch(fail(box));
  if (!list) return;
  main.append(table("tokens", ["Id", "Name", "Role", "Organisation", "Expires", "Last used", ""],
    list.tokens.map((t) => [t.id, t.name, t.role, t.org || "all", when(t.expires_ms), when(t.last_used_ms),
      t.revoked_ms ? "revoked" : el("button", { onclick: async () => {
        try { await call("DELETE", `/api/v1/tokens/${encodeURIComponent(t.id)}`); hooks.render(); } catch (e) { box.textContent = e.message; }
      } }, "Revoke")])));
}
