// Operators: the collector at a glance: store size per organisation, what
// was stored over the last minute, certificates ending soon.
import { el, call, when, alertBox, fail, table, state, every } from "./core.js";

const size = (n) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${Math.round(n)} B`);

export async function operatorPage(main) {
  const box = alertBox();
  main.replaceChildren(el("h1", {}, "Operator overview"), box);
  const view = el("div", { id: "operator-view" });
  main.append(view);
  async function refresh() {
    const o = await call("GET", "/api/v1/overview").catch(fail(box));
    if (!o) return;
    const ingest = o.ingest;
    view.replaceChildren(
      el("h2", {}, "Ingest"),
      el("p", { id: "ingest-rate" },
        `${ingest.records_per_sec.toFixed(2)} records/s, ${size(ingest.bytes_per_sec)}/s over the last ${Math.round(ingest.window_ms / 1000)} s `
        + `(${ingest.records} records, ${size(ingest.bytes)})`
        + (ingest.records_since_start === null ? "." : `; ${ingest.records_since_start} records stored since start.`)),
      el("h2", {}, "Store"),
      el("p", {}, `${size(o.store_bytes)} in segment files.`),
      table("store-sizes", ["Organisation", "Metadata", "Captures", "Total", "Segments"],
        o.store.map((s) => [s.org, size(s.metadata_bytes), size(s.capture_bytes), size(s.bytes), String(s.segments)])),
      el("h2", {}, `Certificates ending within ${o.warning_days} days`),
      o.certificate_warnings.length
        ? table("cert-warnings", ["Kind", "Subject", "Organisation", "Serial", "Ends", "Days left"],
          o.certificate_warnings.map((w) => [w.kind, w.subject, w.org || "–", w.serial || "–", when(w.not_after_ms),
            el("span", { class: w.days_left < 0 ? "error" : "" }, w.days_left < 0 ? "ended" : String(w.days_left))]))
        : el("div", {}, table("cert-warnings", ["Kind", "Subject", "Organisation", "Serial", "Ends", "Days left"], []), el("p", { class: "muted" }, "None.")),
      el("h2", {}, "The collector's own certificates"),
      table("collector-certs", ["Kind", "File", "Serial", "Ends", "Days left"],
        o.collector_certificates.map((c) => [c.kind === "ca" ? "CA" : "collector", c.subject, c.serial || "–", when(c.not_after_ms),
          el("span", { class: c.days_left < o.warning_days ? "error" : "" }, c.days_left < 0 ? "ended" : String(c.days_left))])),
      el("p", { class: "muted" }, `As of ${when(o.at_ms)}.`));
  }
  await refresh();
  every(10000, refresh);
}
