// My account: one-time codes (TOTP) and the password of the signed-in
// account. The TOTP secret is shown once, as text and as an otpauth: URI
// to paste into an authenticator app.
import { state, el, call, alertBox } from "./core.js";

function totpSection(box) {
  const s = state.session;
  const status = el("p", { id: "totp-status" }, s.totp ? "One-time codes are on: signing in needs a code from your app." : "One-time codes are off.");
  const shown = el("div", { id: "totp-setup", hidden: true });
  const code = el("input", { id: "totp-code", inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9 ]*", maxlength: "7", size: "8" });
  // Only what fits the state is shown: set up while off, confirm during
  // set-up, turn off while on.
  const sync = () => { enrol.hidden = s.totp; disable.hidden = !s.totp; confirm.hidden = shown.hidden; row.hidden = !s.totp && shown.hidden; };
  const done = (text) => { status.textContent = text; shown.hidden = true; shown.replaceChildren(); code.value = ""; box.textContent = ""; sync(); };
  const enrol = el("button", { type: "button", id: "totp-enrol", onclick: async () => {
    try {
      const setup = await call("POST", "/console/api/totp");
      shown.replaceChildren(
        el("p", {}, "Add this key to your authenticator app, then type the code it shows and confirm."),
        el("p", {}, "Key: ", el("code", { id: "totp-secret" }, setup.secret)),
        el("p", {}, "Or this URI: ", el("code", { id: "totp-uri", class: "wrap" }, setup.uri)));
      shown.hidden = false;
      box.textContent = "";
      sync();
      code.focus();
    } catch (e) { box.textContent = e.message; }
  } }, "Set up one-time codes");
  const confirm = el("button", { type: "button", id: "totp-confirm", onclick: async () => {
    try { await call("PUT", "/console/api/totp", { code: code.value }); s.totp = true; done("One-time codes are on: signing in needs a code from your app."); } catch (e) { box.textContent = e.message; }
  } }, "Confirm code");
  const disable = el("button", { type: "button", id: "totp-disable", onclick: async () => {
    try { await call("DELETE", "/console/api/totp", { code: code.value }); s.totp = false; done("One-time codes are off."); } catch (e) { box.textContent = e.message; }
  } }, "Turn off (needs a current code)");
  const row = el("div", { class: "inline" }, el("label", {}, "Code ", code), confirm, disable);
  sync();
  return [el("h2", {}, "One-time codes"), status, el("p", {}, enrol), shown, row];
}

function passwordSection(box) {
  const current = el("input", { id: "password-current", type: "password", autocomplete: "current-password", required: true });
  const next = el("input", { id: "password-new", type: "password", autocomplete: "new-password", required: true, minlength: "12" });
  const said = el("p", { id: "password-changed", role: "status" });
  const form = el("form", { id: "password-form", class: "grid" },
    el("label", {}, "Current password", current), el("label", {}, "New password (12 characters or more)", next),
    el("button", { type: "submit", id: "password-change" }, "Change password"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await call("PUT", "/console/api/password", { current: current.value, new: next.value });
      current.value = ""; next.value = ""; box.textContent = "";
      said.textContent = "Password changed; your other sessions were signed out.";
    } catch (e) { box.textContent = e.message; said.textContent = ""; }
  });
  return [el("h2", {}, "Password"), form, said];
}

export async function accountPage(main) {
  const box = alertBox();
  const s = state.session;
  main.replaceChildren(el("h1", {}, "My account"),
    el("p", {}, `${s.name}: ${s.role}${s.org ? " of " + s.org : ""}, signed in with ${s.signed_in_with === "certificate" ? "a client certificate" : "a password"}.`),
    box);
  if (s.signed_in_with === "certificate") {
    main.append(el("p", {}, "This session belongs to your client certificate, which has no console password or one-time codes."));
    return;
  }
  main.append(...totpSection(box), ...passwordSection(box));
}
