// A small SVG line chart, drawn in the browser from numbers the API gives:
// no charting library, nothing fetched. Axes with ticks, values scaled to
// readable units (b/s, kb/s, Mb/s, Gb/s), the time axis in the browser's
// own zone (named under the axis), a legend, gaps where no data came, and
// a <title>/<desc> so screen readers get the chart's gist.
import { zone } from "./core.js";

const NS = "http://www.w3.org/2000/svg";
const COLOURS = ["#0b5cad", "#c2410c", "#1a7f37", "#8250df", "#b42318", "#57606a"];

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) node.append(child);
  return node;
}

// Units: SI prefixes for bits per second; plain numbers per second.
const BIT_UNITS = [[1e9, "Gb/s"], [1e6, "Mb/s"], [1e3, "kb/s"], [1, "b/s"]];
export function scaleFor(max, unit) {
  if (unit === "bps") {
    const [factor, name] = BIT_UNITS.find(([f]) => max >= f) || BIT_UNITS[BIT_UNITS.length - 1];
    return { factor, name };
  }
  return { factor: 1, name: unit };
}

export function formatValue(value, unit) {
  if (value === null || value === undefined) return "–";
  const { factor, name } = scaleFor(Math.abs(value), unit);
  const v = value / factor;
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${name}`;
}

// Round tick steps: 1, 2 or 5 times a power of ten, about `count` of them.
export function niceTicks(max, count = 5) {
  if (!(max > 0)) return { step: 1, ticks: [0, 1] };
  const raw = max / count;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || 10 * power;
  const ticks = [];
  for (let t = 0; t <= max + step * 1e-9; t += step) ticks.push(t);
  if (ticks[ticks.length - 1] < max) ticks.push(ticks[ticks.length - 1] + step);
  return { step, ticks };
}

// Time ticks at round local times: the first step giving at most ~7 ticks.
const TIME_STEPS = [60e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 10800e3, 21600e3, 43200e3, 86400e3];
export function timeTicks(from, to) {
  const span = to - from;
  const step = TIME_STEPS.find((s) => span / s <= 7) || Math.ceil(span / 7 / 86400e3) * 86400e3;
  // Align to the local clock: a local midnight plus whole steps.
  const start = new Date(from);
  start.setHours(0, 0, 0, 0);
  let t = start.getTime();
  while (t < from) t += step;
  const ticks = [];
  for (; t <= to; t += step) ticks.push(t);
  return { step, ticks };
}

function timeLabel(ms, step) {
  const d = new Date(ms);
  if (step >= 86400e3) return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  const time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  if (step >= 21600e3 || (d.getHours() === 0 && d.getMinutes() === 0)) {
    return `${d.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${time}`;
  }
  return time;
}

// chart({ id, title, times, bucketMs, series: [{ name, values }], unit })
// times: bucket starts (ms UTC); each value is the bucket's mean or null.
// Points sit in the middle of their bucket.
export function lineChart({ id, title, times, bucketMs, series, unit }) {
  const width = 600, height = 250;
  const pad = { left: 84, right: 14, top: 14, bottom: 50 };
  const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
  const from = times.length ? times[0] : Date.now() - 3600e3;
  const to = times.length ? times[times.length - 1] + bucketMs : Date.now();
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined && isFinite(v));
  const max = all.length ? Math.max(...all) : 0;
  const scale = scaleFor(max, unit);
  const { ticks } = niceTicks(max / scale.factor || 1);
  const top = ticks[ticks.length - 1] * scale.factor;
  const x = (ms) => pad.left + ((ms - from) / (to - from)) * plotW;
  const y = (v) => pad.top + plotH - (v / top) * plotH;

  const titleId = `${id}-title`, descId = `${id}-desc`;
  const peaks = series.map((s) => {
    const vals = s.values.filter((v) => v !== null);
    return `${s.name} peak ${vals.length ? formatValue(Math.max(...vals), unit) : "no data"}`;
  }).join("; ");
  const root = svg("svg", { id, class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-labelledby": `${titleId} ${descId}`, preserveAspectRatio: "xMidYMid meet" },
  svg("title", { id: titleId }, title),
  svg("desc", { id: descId }, `From ${new Date(from).toLocaleString()} to ${new Date(to).toLocaleString()} (${zone}). ${peaks}.`));

  // Value axis: grid lines and labels in the chosen unit.
  const axis = svg("g", { class: "axis", "aria-hidden": "true" });
  for (const t of ticks) {
    const ty = y(t * scale.factor);
    axis.append(svg("line", { x1: pad.left, x2: pad.left + plotW, y1: ty, y2: ty, stroke: "#d0d7de", "stroke-width": 1 }));
    axis.append(svg("text", { x: pad.left - 6, y: ty + 4, "text-anchor": "end", "font-size": 13, fill: "#57606a" },
      `${Number(t.toPrecision(6))} ${scale.name}`));
  }
  // Time axis: ticks at round local times.
  const time = timeTicks(from, to);
  axis.append(svg("line", { x1: pad.left, x2: pad.left + plotW, y1: pad.top + plotH, y2: pad.top + plotH, stroke: "#57606a" }));
  axis.append(svg("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: pad.top + plotH, stroke: "#57606a" }));
  for (const t of time.ticks) {
    const tx = x(t);
    axis.append(svg("line", { x1: tx, x2: tx, y1: pad.top + plotH, y2: pad.top + plotH + 5, stroke: "#57606a" }));
    axis.append(svg("text", { x: tx, y: pad.top + plotH + 18, "text-anchor": "middle", "font-size": 13, fill: "#57606a" }, timeLabel(t, time.step)));
  }
  axis.append(svg("text", { x: pad.left + plotW / 2, y: height - 8, "text-anchor": "middle", "font-size": 13, fill: "#1b1f24" }, `Time (${zone})`));
  root.append(axis);

  // Lines, broken where a bucket has no data; a lone point gets a dot.
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    let d = "", run = 0, last = null;
    const dots = [];
    s.values.forEach((v, j) => {
      if (v === null || v === undefined || !isFinite(v)) { if (run === 1) dots.push(last); run = 0; return; }
      const px = x(times[j] + bucketMs / 2), py = y(v);
      d += `${run === 0 ? "M" : "L"}${px.toFixed(1)},${py.toFixed(1)} `;
      run += 1;
      last = [px, py];
    });
    if (run === 1) dots.push(last);
    const g = svg("g", { class: "series", "data-series": s.name });
    // Every other series dashed, so one drawn over an equal one stays visible.
    const dash = i % 2 ? { "stroke-dasharray": "6 4" } : {};
    if (d) g.append(svg("path", { d: d.trim(), fill: "none", stroke: colour, "stroke-width": 2, "stroke-linejoin": "round", ...dash }));
    for (const [px, py] of dots) g.append(svg("circle", { cx: px, cy: py, r: 2.5, fill: colour }));
    root.append(g);
  });

  if (!all.length) {
    root.append(svg("text", { x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle", "font-size": 14, fill: "#57606a" }, "No counter records in this range"));
  }

  // The legend, as HTML beside the chart so it wraps on narrow screens.
  const legend = document.createElement("ul");
  legend.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("li");
    const swatch = svg("svg", { width: 22, height: 14, "aria-hidden": "true" },
      svg("line", { x1: 0, x2: 22, y1: 7, y2: 7, stroke: COLOURS[i % COLOURS.length], "stroke-width": 3, ...(i % 2 ? { "stroke-dasharray": "6 4" } : {}) }));
    item.append(swatch, ` ${s.name}`);
    legend.append(item);
  });
  const figure = document.createElement("figure");
  figure.className = "chart";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.append(caption, root, legend);
  return figure;
}
