// Console accounts: operators manage every account, an org-admin those
// of their own organisation (never an operator's). Every change ends the
// account's sessions, so a new role or a reset takes effect at once.
import { state, el, call, when, alertBox, fail, hooks } from "./core.js";

const path = (name) => `/api/v1/accounts/${encodeURIComponent(name)}`;

// A button that acts on one account, then redraws the page.
function action(box, id, label, run) {
  return el("button", { type: "button", id, onclick: async () => {
    try { await run(); box.textContent = ""; hooks.render(); } catch (e) { box.textContent = e.message; }
  } }, label);
}

// Deleting takes a second click on the same button, so a slip of the
// keyboard does not remove an account.
function deleteButton(box, a) {
  const button = el("button", { type: "button", id: `account-delete-${a.name}`, class: "danger" }, "Delete");
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) { armed = true; button.textContent = `Really delete ${a.name}?`; return; }
    try { await call("DELETE", path(a.name)); box.textContent = ""; hooks.render(); } catch (e) { box.textContent = e.message; }
  });
  button.addEventListener("blur", () => { armed = false; button.textContent = "Delete"; });
  return button;
}

function status(a) {
  const parts = [];
  if (a.disabled) parts.push("disabled");
  if (a.locked_until_ms && a.locked_until_ms > Date.now()) parts.push(`locked until ${when(a.locked_until_ms)}`);
  if (a.totp) parts.push("one-time codes on");
  return parts.join(", ") || "active";
}

function createForm(box) {
  const session = state.session;
  const roles = session.role === "operator" ? ["org-admin", "support", "operator"] : ["org-admin", "support"];
  const name = el("input", { id: "account-name", required: true, autocomplete: "off" });
  const role = el("select", { id: "account-role" }, ...roles.map((r) => el("option", { value: r }, r)));
  const org = el("input", { id: "account-org", value: session.org || "", placeholder: "organisation", readonly: session.org ? true : false });
  const password = el("input", { id: "account-password", type: "password", autocomplete: "new-password", required: true, minlength: "12" });
  const sync = () => { org.disabled = role.value === "operator"; };
  role.addEventListener("change", sync);
  sync();
  const form = el("form", { id: "account-new", class: "grid" },
    el("label", {}, "Name", name), el("label", {}, "Role", role), el("label", {}, "Organisation", org),
    el("label", {}, "First password (12 characters or more)", password),
    el("button", { type: "submit", id: "account-create" }, "Create account"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim(), role: role.value, password: password.value };
    if (role.value !== "operator") body.org = org.value.trim();
    try { await call("POST", "/api/v1/accounts", body); box.textContent = ""; hooks.render(); } catch (e) { box.textContent = e.message; }
  });
  return form;
}

export async function accountsPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Accounts"), box);
  if (state.session.role === "support") { box.textContent = "Support staff do not manage accounts."; return; }
  const list = await call("GET", "/api/v1/accounts").catch(fail(box));
  if (!list) return;
  const rows = list.accounts.map((a) => el("tr", { "data-account": a.name },
    el("td", {}, a.name), el("td", {}, a.role), el("td", {}, a.org || "all"), el("td", {}, status(a)),
    el("td", {}, when(a.last_sign_in_ms)), el("td", {}, a.created_by),
    el("td", {}, el("div", { class: "actions" },
      action(box, `account-reset-totp-${a.name}`, "Reset one-time codes", () => call("PATCH", path(a.name), { reset_totp: true })),
      action(box, `account-unlock-${a.name}`, "Unlock", () => call("PATCH", path(a.name), { unlock: true })),
      action(box, `account-disable-${a.name}`, a.disabled ? "Enable" : "Disable", () => call("PATCH", path(a.name), { disabled: !a.disabled })),
      deleteButton(box, a)))));
  main.append(
    el("table", { id: "accounts" },
      el("thead", {}, el("tr", {}, ...["Name", "Role", "Organisation", "State", "Last sign-in", "Created by", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows)),
    el("h2", {}, "New account"), createForm(box),
    el("p", { class: "muted" }, "A change to an account signs it out everywhere."));
}
