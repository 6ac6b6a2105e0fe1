// The Glimpse console: one page, hash routes, every datum from /api/v1
// with the session cookie; every change carries the session's CSRF token.
// No framework and no build step: the collector embeds these files as
// they are, and nothing is fetched from another origin.
const state = { session: null, org: null, timers: [] };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
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
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (response.status === 401 && state.session && path !== "/console/api/session") {
    state.session = null;
    render("Your session ended; sign in again.");
  }
  if (!response.ok) throw Object.assign(new Error(data && data.detail ? data.detail : response.statusText), { status: response.status, problem: data });
  return data;
}

// Times in the browser's own zone, with the zone named.
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
function when(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

function alertBox() { return el("p", { class: "error", role: "alert", id: "error" }); }
function fail(box) { return (e) => { box.textContent = e.message; }; }

function table(id, headings, rows) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c ?? "–"))))));
}

function signInPage(main, message) {
  const error = el("p", { class: "error", role: "alert", id: "signin-error" }, message || "");
  const form = el("form", { class: "signin", id: "signin" },
    el("h1", {}, "Sign in"),
    el("label", {}, "Account", el("input", { name: "name", id: "name", autocomplete: "username", required: true })),
    el("label", {}, "Password", el("input", { name: "password", id: "password", type: "password", autocomplete: "current-password", required: true })),
    el("button", { type: "submit", id: "signin-submit" }, "Sign in"), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      state.session = await call("POST", "/console/api/session", { name: form.name.value, password: form.password.value });
      state.org = state.session.org;
      location.hash = "#/";
      render();
    } catch (e) {
      error.textContent = e.message;
    }
  });
  main.replaceChildren(form);
  form.name.focus();
}

function orgPicker() {
  if (state.session.org) return el("p", {}, `Organisation: ${state.session.org}`);
  const input = el("input", { id: "org", value: state.org || "", placeholder: "organisation", "aria-label": "Organisation" });
  const form = el("form", { id: "org-form", class: "inline" }, el("label", {}, "Organisation ", input), el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (event) => { event.preventDefault(); state.org = input.value.trim() || null; render(); });
  return form;
}

async function overviewPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Organisation"), orgPicker(), box);
  if (!state.org) return;
  const org = await call("GET", `/api/v1/orgs/${encodeURIComponent(state.org)}`).catch(fail(box));
  if (!org) return;
  main.append(table("org-status", ["Setting", "Value"], [
    ["Devices connected", String(org.connected_devices)],
    ["Capture consent", org.capture_consent ? "on" : "off"],
    ["Support access until", org.support_until_ms ? when(org.support_until_ms) : "no grant"],
    ["Fields not collected", org.omitted_fields.join(", ") || "none"],
    ["MAC addresses", org.pseudonymise_macs ? "pseudonymised" : "as seen"],
    ...Object.entries(org.retention_days).map(([kind, days]) => [`Retention of ${kind}`, `${days} days`]),
  ]));
}

async function devicesPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Devices"), orgPicker(), box);
  if (!state.org) return;
  const list = await call("GET", `/api/v1/devices?org=${encodeURIComponent(state.org)}`).catch(fail(box));
  if (!list) return;
  main.append(table("devices", ["Device", "Kind", "Transport", "Connected since", "Last record", "Agent", "Dropped"],
    list.devices.map((d) => [d.device, d.kind, d.connected ? (d.transport || "") : "not connected", when(d.connected_since_ms), when(d.last_record_ms),
      d.agent_version || "–", d.health ? String(d.health.dropped_metadata + d.health.dropped_captures) : "0"])));
}

async function capturePage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Packet capture"), orgPicker(), box);
  if (!state.org) return;
  const base = `/api/v1/orgs/${encodeURIComponent(state.org)}`;
  const org = await call("GET", base).catch(fail(box));
  if (!org) return;
  const consent = el("input", { type: "checkbox", role: "switch", id: "consent-toggle", checked: org.capture_consent });
  consent.addEventListener("change", async () => {
    try {
      await call("PUT", `${base}/consent`, { capture: consent.checked });
      box.textContent = "";
    } catch (e) { consent.checked = !consent.checked; box.textContent = e.message; }
  });
  main.append(el("p", {}, el("label", { class: "check" }, consent, " Capture consent (header-only captures allowed on this organisation's devices)")));
  const devices = await call("GET", `/api/v1/devices?org=${encodeURIComponent(state.org)}`).catch(() => ({ devices: [] }));
  const device = el("select", { id: "capture-device" }, ...devices.devices.filter((d) => d.connected).map((d) => el("option", { value: d.device }, d.device)));
  const form = el("form", { id: "capture-form", class: "grid" },
    el("label", {}, "Device", device),
    el("label", {}, "Interface", el("input", { id: "capture-interface", name: "interface", value: "eth0", required: true })),
    el("label", {}, "Filter (BPF)", el("input", { id: "capture-filter", name: "filter", placeholder: "tcp port 443" })),
    el("label", {}, "Duration (s)", el("input", { id: "capture-duration", name: "duration", type: "number", min: "1", value: "30" })),
    el("label", {}, "Packet limit", el("input", { id: "capture-packets", name: "packets", type: "number", min: "1", value: "1000" })),
    el("button", { type: "submit", id: "capture-start" }, "Start capture"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await call("POST", `${base}/captures`, { device: device.value, interface: form.interface.value, filter: form.filter.value,
        duration_secs: Number(form.duration.value), max_packets: Number(form.packets.value) });
      box.textContent = "";
      refresh();
    } catch (e) { box.textContent = e.message; }
  });
  const list = el("div", { id: "capture-progress", "aria-live": "polite" });
  const download = el("a", { id: "pcapng-download", href: `${base}/export?kind=capture&format=pcapng`, download: `${state.org}-captures.pcapng` }, "Download stored captures (pcapng, headers only)");
  main.append(form, el("h2", {}, "Captures"), list, el("p", {}, download));
  async function refresh() {
    const captures = await call("GET", `${base}/captures`).catch(fail(box));
    if (!captures) return;
    list.replaceChildren(table("captures", ["Id", "Device", "State", "Packets", "Header bytes", "Reason"],
      captures.captures.map((c) => [String(c.id), c.device, c.state, c.packets === null ? "–" : String(c.packets),
        c.header_bytes === null ? "–" : String(c.header_bytes), c.reason || ""])));
  }
  await refresh();
  state.timers.push(setInterval(refresh, 2000));
}

async function supportPage(main) {
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

async function auditPage(main) {
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

async function tokensPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "API tokens"), box);
  const list = await call("GET", "/api/v1/tokens").catch(fail(box));
  if (!list) return;
  main.append(table("tokens", ["Id", "Name", "Role", "Organisation", "Expires", "Last used", ""],
    list.tokens.map((t) => [t.id, t.name, t.role, t.org || "all", when(t.expires_ms), when(t.last_used_ms),
      t.revoked_ms ? "revoked" : el("button", { onclick: async () => {
        try { await call("DELETE", `/api/v1/tokens/${encodeURIComponent(t.id)}`); render(); } catch (e) { box.textContent = e.message; }
      } }, "Revoke")])));
}

const pages = [
  ["#/", "Organisation", overviewPage],
  ["#/devices", "Devices", devicesPage],
  ["#/capture", "Packet capture", capturePage],
  ["#/support", "Support access", supportPage],
  ["#/audit", "Audit", auditPage],
  ["#/tokens", "API tokens", tokensPage],
];

async function render(message) {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  const main = document.getElementById("main");
  const who = document.getElementById("who");
  const nav = document.getElementById("nav");
  if (!state.session && !message) {
    try { state.session = await call("GET", "/console/api/session"); state.org = state.org || state.session.org; } catch (e) { state.session = null; }
  }
  if (!state.session) { who.replaceChildren(); nav.replaceChildren(); signInPage(main, message); return; }
  const out = el("button", { id: "signout", onclick: async () => {
    try { await call("DELETE", "/console/api/session"); } finally { state.session = null; render(); }
  } }, "Sign out");
  const s = state.session;
  who.replaceChildren(el("span", { id: "whoami" }, `${s.name} (${s.role}${s.org ? " of " + s.org : ""}) `), out);
  const current = pages.find(([hash]) => hash === (location.hash || "#/")) || pages[0];
  nav.replaceChildren(...pages.map(([hash, title]) => el("a", { href: hash, "aria-current": hash === current[0] ? "page" : false }, title)));
  try { await current[2](main); } catch (e) { main.append(el("p", { class: "error", role: "alert" }, e.message)); }
  main.append(el("p", { class: "muted" }, `Times are in ${zone}.`));
}

window.addEventListener("hashchange", () => render());
render();
