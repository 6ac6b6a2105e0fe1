// Data rights: find every stored record about a person or device by MAC,
// IP address or username, download it, erase it; and the organisation's
// minimisation (fields not collected) and MAC pseudonymisation settings.
import { state, el, call, when, alertBox, fail, table, orgPicker } from "./core.js";

// Every metadata field a device can leave out, as the collector names
// them (a unit test of the collector checks this list is complete).
const FIELDS = [
  ["hostname", "Device hostname"], ["os", "OS name and version"], ["model", "Hardware model"], ["kernel", "Kernel release"],
  ["uptime", "Uptime"], ["interface-macs", "Interface MAC addresses"], ["interface-addresses", "Interface IP addresses"],
  ["interface-counters", "Interface counters"], ["client-addresses", "Clients' IP addresses"], ["client-hostnames", "Clients' hostnames"],
  ["usernames", "Clients' usernames (802.1X)"], ["user-agents", "Clients' user agents"], ["client-signal", "Stations' signal and rates"],
  ["client-counters", "Clients' traffic counters"], ["roaming", "Roaming events"], ["location", "Location"],
  ["vlans", "VLAN membership"], ["lldp", "LLDP neighbours"], ["applications", "Per-application sessions"],
  ["client-devices", "Clients' device type, model, OS and vendor"],
  ["wan-clients", "WAN destinations' clients"], ["wan-destinations", "WAN destination addresses"],
  ["wan-sites", "WAN destinations' site names"],
];

// A record in one line: what it is and the subject's part in it.
function describe(r) {
  const body = r.record && typeof r.record === "object" ? Object.keys(r.record)[0] : r.kind;
  if (r.summary) {
    const s = r.summary;
    return `${body}: ${s.src || ""} → ${s.dst || ""} ${s.protocol || ""}`.trim();
  }
  return body || "record";
}

export async function rightsPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Data rights"), orgPicker(), box);
  if (!state.org) return;
  const base = `/api/v1/orgs/${encodeURIComponent(state.org)}`;

  const kind = el("select", { id: "subject-kind" },
    el("option", { value: "mac" }, "MAC address"), el("option", { value: "ip" }, "IP address"), el("option", { value: "username" }, "Username"));
  const value = el("input", { id: "subject-value", required: true, placeholder: "02:00:5e:10:00:01, 192.0.2.7 or alice" });
  const find = el("form", { id: "subject-form", class: "grid" },
    el("label", {}, "Find by", kind), el("label", {}, "Value", value),
    el("button", { type: "submit", id: "subject-find" }, "Find records"));
  const found = el("div", { id: "subject-found", "aria-live": "polite" });
  const more = el("button", { type: "button", id: "subject-more", hidden: true }, "More");
  const download = el("button", { type: "button", id: "subject-download", hidden: true }, "Download all (JSON lines)");
  const confirmErase = el("input", { type: "checkbox", id: "subject-erase-confirm" });
  const erase = el("button", { type: "button", id: "subject-erase", class: "danger" }, "Erase every record");
  const eraseRow = el("p", { hidden: true }, el("label", { class: "check" }, confirmErase, " I understand erasure cannot be undone"), " ", erase);
  const erased = el("p", { id: "subject-erased", "aria-live": "polite" });
  main.append(el("h2", {}, "Find, export or erase a subject's data"), find, found, el("p", {}, more, " ", download), eraseRow, erased);

  let subject = null, records = [], total = 0;
  const draw = () => {
    found.replaceChildren(el("p", {}, `${total} stored records about ${subject.kind} ${subject.value}.`),
      table("subject-records", ["Observed", "Device", "Kind", "Record"],
        records.map((r) => [r.observed_at ? when(Date.parse(r.observed_at)) : "–", r.device, r.kind, describe(r)])));
    more.hidden = records.length >= total;
    download.hidden = total === 0;
    eraseRow.hidden = total === 0;
  };
  const page = async (skip) => call("POST", `${base}/subjects/export`, { subject, skip });
  find.addEventListener("submit", async (event) => {
    event.preventDefault();
    subject = { kind: kind.value, value: value.value.trim() };
    erased.textContent = "";
    try { const p = await page(0); records = p.records; total = p.total; box.textContent = ""; draw(); } catch (e) { box.textContent = e.message; }
  });
  more.addEventListener("click", async () => {
    try { const p = await page(records.length); records = records.concat(p.records); total = p.total; draw(); } catch (e) { box.textContent = e.message; }
  });
  download.addEventListener("click", async () => {
    try {
      let all = [];
      for (;;) {
        const p = await page(all.length);
        all = all.concat(p.records);
        if (!p.records.length || all.length >= p.total) break;
      }
      const blob = new Blob(all.map((r) => JSON.stringify(r) + "\n"), { type: "application/x-ndjson" });
      const link = el("a", { href: URL.createObjectURL(blob), download: `${state.org}-${subject.kind}-records.jsonl` });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (e) { box.textContent = e.message; }
  });
  erase.addEventListener("click", async () => {
    if (!confirmErase.checked) { box.textContent = "Tick the box to confirm the erasure first."; return; }
    try {
      const r = await call("POST", `${base}/subjects/erase`, { subject });
      erased.textContent = `Erased: ${r.metadata} metadata records removed or cut down, ${r.captures} capture records removed, ${r.segments_rewritten} segment files rewritten.`;
      records = []; total = 0; confirmErase.checked = false; draw(); box.textContent = "";
    } catch (e) { box.textContent = e.message; }
  });

  const org = await call("GET", base).catch(fail(box));
  if (!org) return;
  const boxes = FIELDS.map(([name, label]) => [name, el("input", { type: "checkbox", id: `omit-${name}`, checked: org.omitted_fields.includes(name) }), label]);
  const pseudo = el("input", { type: "checkbox", id: "pseudonymise-macs", checked: org.pseudonymise_macs });
  const strict = el("input", { type: "checkbox", id: "strict-headers", checked: org.strict_headers });
  const policy = el("form", { id: "policy-form" },
    el("fieldset", { class: "fields" }, el("legend", {}, "Fields the organisation's devices do not collect"),
      ...boxes.map(([, input, label]) => el("label", { class: "check" }, input, " ", label))),
    el("p", {}, el("label", { class: "check" }, pseudo, " Store MAC addresses as keyed pseudonyms")),
    el("p", {}, el("label", { class: "check" }, strict, " Scrub captured headers strictly (zero unknown option data, AH's ICV, radiotap vendor data, IP IDs and reserved bits)")),
    el("button", { type: "submit", id: "policy-save" }, "Save the data policy"));
  const saved = el("p", { id: "policy-saved", "aria-live": "polite" });
  policy.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const r = await call("PUT", `${base}/data-policy`, { omit: boxes.filter(([, i]) => i.checked).map(([n]) => n), pseudonymise_macs: pseudo.checked, strict_headers: strict.checked });
      saved.textContent = `Saved; ${r.devices_told} connected devices told at once.`;
      box.textContent = "";
    } catch (e) { box.textContent = e.message; }
  });
  const wan = el("input", { type: "checkbox", id: "wan-destinations", checked: org.wan_destinations });
  const wanForm = el("form", { id: "wan-form" },
    el("p", {}, el("label", { class: "check" }, wan, " Gateways report WAN destinations: sessions per client and destination address, with site names from their own DNS resolver (never from packets)")),
    el("button", { type: "submit", id: "wan-save" }, "Save"));
  const wanSaved = el("p", { id: "wan-saved", "aria-live": "polite" });
  wanForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const r = await call("PUT", `${base}/wan-destinations`, { on: wan.checked });
      wanSaved.textContent = `Saved; ${r.devices_told} connected devices told at once.`;
      box.textContent = "";
    } catch (e) { box.textContent = e.message; }
  });
  main.append(el("h2", {}, "Minimisation and pseudonymisation"), policy, saved, el("h2", {}, "WAN destinations"), wanForm, wanSaved);
}
