// The Glimpse console: one page, hash routes, every datum from /api/v1
// with the session cookie; every change carries the session's CSRF token.
const state = { session: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function call(method, path, body) {
  const headers = {};
  if (method !== "GET" && state.session) headers["X-CSRF-Token"] = state.session.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw Object.assign(new Error(data && data.detail ? data.detail : response.statusText), { status: response.status, problem: data });
  return data;
}

function signInPage(main, message) {
  const error = el("p", { class: "error", role: "alert", id: "signin-error" }, message || "");
  const form = el("form", { class: "signin", id: "signin" },
    el("h1", {}, "Sign in"),
    el("label", {}, "Account", el("input", { name: "name", id: "name", autocomplete: "username", required: "" })),
    el("label", {}, "Password", el("input", { name: "password", id: "password", type: "password", autocomplete: "current-password", required: "" })),
    el("button", { type: "submit", id: "signin-submit" }, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      state.session = await call("POST", "/console/api/session", { name: form.name.value, password: form.password.value });
      location.hash = "#/";
      render();
    } catch (e) {
      error.textContent = e.message;
    }
  });
  main.replaceChildren(form);
}

async function render() {
  const main = document.getElementById("main");
  const who = document.getElementById("who");
  if (!state.session) {
    try { state.session = await call("GET", "/console/api/session"); } catch (e) { state.session = null; }
  }
  if (!state.session) { who.replaceChildren(); signInPage(main); return; }
  const out = el("button", { id: "signout", onclick: async () => {
    try { await call("DELETE", "/console/api/session"); } finally { state.session = null; render(); }
  } }, "Sign out");
  who.replaceChildren(el("span", { id: "whoami" }, `${state.session.name} (${state.session.role}${state.session.org ? " of " + state.session.org : ""}) `), out);
  main.replaceChildren(el("h1", {}, "Glimpse"), el("p", {}, "Signed in."));
}

window.addEventListener("hashchange", render);
render();
