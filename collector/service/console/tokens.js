// Who may use the API: API tokens (create, with the secret shown once;
// revoke) and the admin and support certificates the collector knows
// (expiry, last use, revoke).
import { state, el, call, when, alertBox, fail, table } from "./core.js";

// Expiry within this many days is flagged.
const SOON_DAYS = 30;

function expiry(ms, now) {
  if (ms === null || ms === undefined) return "–";
  const days = Math.floor((ms - now) / 86400000);
  if (ms <= now) return el("span", { class: "bad" }, `expired ${when(ms)}`);
  if (days < SOON_DAYS) return el("span", { class: "warn" }, `${when(ms)} (in ${days} days)`);
  return when(ms);
}

export async function tokensPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "API access"), box);
  const s = state.session;
  const operator = s.role === "operator";

  // A new token: at most the creator's own role and organisation.
  const roles = operator ? ["operator", "org-admin", "support"] : s.role === "org-admin" ? ["org-admin", "support"] : [];
  if (roles.length) {
    const name = el("input", { id: "token-name", required: true, placeholder: "grafana", pattern: "[A-Za-z0-9._-]+" });
    const role = el("select", { id: "token-role" }, ...roles.map((r) => el("option", { value: r }, r)));
    const org = el("input", { id: "token-org", value: s.org || state.org || "", disabled: !operator, placeholder: "organisation" });
    const readOnly = el("input", { type: "checkbox", id: "token-read-only", checked: true });
    const days = el("input", { id: "token-days", type: "number", min: "1", max: "366", value: "90" });
    const form = el("form", { id: "token-form", class: "grid" },
      el("label", {}, "Name", name), el("label", {}, "Role", role), el("label", {}, "Organisation", org),
      el("label", {}, "Days valid", days), el("label", { class: "check" }, readOnly, " Read-only"),
      el("button", { type: "submit", id: "token-create" }, "Create token"));
    const secret = el("div", { id: "token-secret", "aria-live": "polite" });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { name: name.value.trim(), role: role.value, read_only: readOnly.checked, expires_in_days: Number(days.value) };
      if (role.value !== "operator") body.org = org.value.trim() || null;
      try {
        const created = await call("POST", "/api/v1/tokens", body);
        box.textContent = "";
        secret.replaceChildren(el("p", {}, "The token, shown this once (the collector keeps only its hash):"),
          el("p", {}, el("code", { class: "secret" }, created.token)));
        await drawTokens();
      } catch (e) { box.textContent = e.message; }
    });
    main.append(el("h2", {}, "New API token"), form, secret);
  }

  const tokens = el("div");
  main.append(el("h2", {}, "API tokens"), tokens);
  async function drawTokens() {
    const list = await call("GET", "/api/v1/tokens").catch(fail(box));
    if (!list) return;
    const now = Date.now();
    tokens.replaceChildren(table("tokens", ["Id", "Name", "Role", "Organisation", "Read-only", "Created by", "Expires", "Last used", ""],
      list.tokens.map((t) => [t.id, t.name, t.role, t.org || "all", t.read_only ? "yes" : "no", t.created_by, t.revoked_ms ? "–" : expiry(t.expires_ms, now), when(t.last_used_ms),
        t.revoked_ms ? `revoked ${when(t.revoked_ms)}` : el("button", { type: "button", class: "token-revoke", onclick: async () => {
          try { await call("DELETE", `/api/v1/tokens/${encodeURIComponent(t.id)}`); await drawTokens(); } catch (e) { box.textContent = e.message; }
        } }, "Revoke")])));
  }
  await drawTokens();

  const certs = el("div");
  main.append(el("h2", {}, "Admin and support certificates"), certs);
  async function drawCerts() {
    const list = await call("GET", "/api/v1/identities/admins").catch(fail(box));
    if (!list) return;
    const now = Date.now();
    certs.replaceChildren(table("admin-certs", ["Name", "Role", "Organisation", "Serial", "Expires", "Last used", ""],
      list.admins.map((a) => [a.name, a.role, a.org || "all", a.serial, a.revoked ? "–" : expiry(a.not_after_ms, now), when(a.last_used_ms),
        a.revoked ? `revoked ${when(a.revoked_at_ms)}` : el("button", { type: "button", class: "cert-revoke", onclick: async () => {
          try { await call("POST", `/api/v1/identities/admins/${encodeURIComponent(a.serial)}/revoke`); await drawCerts(); } catch (e) { box.textContent = e.message; }
        } }, "Revoke")])));
  }
  await drawCerts();
}
