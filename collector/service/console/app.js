// The Glimpse console: one page, hash routes, every datum from /api/v1
// with the session cookie; every change carries the session's CSRF token.
// No framework and no build step: the collector embeds these files as
// they are, and nothing is fetched from another origin. Each page is its
// own module; this one signs in and routes.
import { state, hooks, el, call, zone } from "./core.js";
import { overviewPage } from "./overview.js";
import { devicesPage, devicePage } from "./devices.js";
import { orgsPage } from "./orgs.js";
import { operatorPage } from "./operator.js";
import { capturePage } from "./capture.js";
import { supportPage } from "./support.js";
import { auditPage } from "./audit.js";
import { tokensPage } from "./tokens.js";
import { rightsPage } from "./rights.js";
import { accountsPage } from "./accounts.js";
import { accountPage } from "./account.js";

function signInPage(main, message) {
  const error = el("p", { class: "error", role: "alert", id: "signin-error" }, message || "");
  const signedIn = (session) => { state.session = session; state.org = session.org; location.hash = "#/"; render(); };
  // The code field is always there (empty when the account has no
  // one-time codes), so the form does not tell which accounts have them.
  const form = el("form", { class: "signin", id: "signin" },
    el("h1", {}, "Sign in"),
    el("label", {}, "Account", el("input", { name: "name", id: "name", autocomplete: "username", required: true })),
    el("label", {}, "Password", el("input", { name: "password", id: "password", type: "password", autocomplete: "current-password", required: true })),
    el("label", {}, "One-time code (if set up)", el("input", { name: "code", id: "code", inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9 ]*", maxlength: "7" })),
    el("button", { type: "submit", id: "signin-submit" }, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: form.name.value, password: form.password.value };
    if (form.code.value.trim()) body.code = form.code.value.trim();
    try { signedIn(await call("POST", "/console/api/session", body)); } catch (e) { error.textContent = e.message; form.code.value = ""; }
  });
  main.replaceChildren(form);
  form.name.focus();
  // Certificate sign-in, where the collector has it on.
  call("GET", "/console/api/config").then((config) => {
    if (!config || !config.certificate_sign_in) return;
    const who = config.certificate_name ? ` (${config.certificate_name})` : "";
    const button = el("button", { type: "button", id: "signin-certificate", disabled: config.certificate_name ? false : true, onclick: async () => {
      try { signedIn(await call("POST", "/console/api/session/certificate", {})); } catch (e) { error.textContent = e.message; }
    } }, `Sign in with my certificate${who}`);
    const note = config.certificate_name ? [] : [el("p", { class: "muted" }, "This browser did not present an admin certificate.")];
    form.after(el("div", { class: "signin", id: "signin-certificate-box" }, el("p", {}, "or"), button, ...note));
  }).catch(() => {});
}

const pages = [
  ["#/", "Organisation", overviewPage],
  ["#/devices", "Devices", devicesPage],
  ["#/capture", "Packet capture", capturePage],
  ["#/support", "Support access", supportPage],
  ["#/rights", "Data rights", rightsPage],
  ["#/audit", "Audit", auditPage],
  ["#/tokens", "API access", tokensPage],
  ["#/accounts", "Accounts", accountsPage, { manages: true }],
  ["#/account", "My account", accountPage],
  ["#/orgs", "Organisations", orgsPage, { operator: true }],
  ["#/operator", "Operator", operatorPage, { operator: true }],
  // Not in the nav: reached from a device in the list; the id follows the slash.
  ["#/device/", "Device", devicePage, { hidden: true, prefix: true }],
];

// Whether a page is listed in the nav for this session: operator pages for
// operators only, account management not for support (which manages none).
const listed = (page, s) => !(page[3] && (page[3].hidden || (page[3].operator && s.role !== "operator") || (page[3].manages && s.role === "support")));

// Each render draws into its own view; one that a newer render overtook
// (a quick second click, sign-in changing the hash) is dropped, never shown
// beside the new one.
async function render(message) {
  const mine = ++state.generation;
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  const main = document.getElementById("main");
  const who = document.getElementById("who");
  const nav = document.getElementById("nav");
  if (!state.session && !message) {
    try { state.session = await call("GET", "/console/api/session"); state.org = state.org || state.session.org; } catch (e) { state.session = null; }
  }
  if (mine !== state.generation) return;
  if (!state.session) { who.replaceChildren(); nav.replaceChildren(); signInPage(main, message); return; }
  const out = el("button", { id: "signout", onclick: async () => {
    try { await call("DELETE", "/console/api/session"); } finally { state.session = null; render(); }
  } }, "Sign out");
  const s = state.session;
  who.replaceChildren(el("span", { id: "whoami" }, `${s.name} (${s.role}${s.org ? " of " + s.org : ""}) `), out);
  const here = location.hash || "#/";
  const current = pages.find((p) => p[0] === here || (p[3] && p[3].prefix && here.startsWith(p[0]))) || pages[0];
  nav.replaceChildren(...pages.filter((p) => listed(p, s)).map(([hash, title]) => el("a", { href: hash, "aria-current": hash === current[0] ? "page" : false }, title)));
  const view = el("div", { class: "view" });
  main.replaceChildren(view);
  try { await current[2](view); } catch (e) { view.append(el("p", { class: "error", role: "alert" }, e.message)); }
  view.append(el("p", { class: "muted" }, `Times are in ${zone}.`));
}

hooks.render = render;
window.addEventListener("hashchange", () => render());
render();
