// Shared by every page of the console: the element builder, the API call
// (with the session's CSRF token on every change), times in the browser's
// zone, tables, the organisation picker.

// The router sets hooks.render, so a 401 anywhere returns to sign-in.
export const hooks = { render: () => {} };

export const state = { session: null, org: null, timers: [], generation: 0 };

// Runs `work` every `ms` while the page that asked is still shown: a page
// that a newer render replaced stops its own timers.
export function every(ms, work) {
  const shown = state.generation;
  const id = setInterval(() => {
    if (state.generation !== shown) { clearInterval(id); return; }
    work();
  }, ms);
  state.timers.push(id);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

export async function call(method, path, body) {
  const headers = {};
  if (method !== "GET" && state.session) headers["X-CSRF-Token"] = state.session.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (response.status === 401 && state.session && path !== "/console/api/session") {
    state.session = null;
    hooks.render("Your session ended; sign in again.");
  }
  if (!response.ok) throw Object.assign(new Error(data && data.detail ? data.detail : response.statusText), { status: response.status, problem: data });
  return data;
}

// Times in the browser's own zone, with the zone named.
export const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
export function when(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function alertBox() { return el("p", { class: "error", role: "alert", id: "error" }); }
export function fail(box) { return (e) => { box.textContent = e.message; }; }

export function table(id, headings, rows) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c ?? "–"))))));
}

export function orgPicker() {
  if (state.session.org) return el("p", {}, `Organisation: ${state.session.org}`);
  const input = el("input", { id: "org", value: state.org || "", placeholder: "organisation", "aria-label": "Organisation" });
  const form = el("form", { id: "org-form", class: "inline" }, el("label", {}, "Organisation ", input), el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (event) => { event.preventDefault(); state.org = input.value.trim() || null; hooks.render(); });
  return form;
}

