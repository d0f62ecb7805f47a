//! Vital signs as SVG line charts drawn here (no library), each with a data table for screen readers.

const SVG = "http://www.w3.org/2000/svg";

/** Plain names and units of the vital-sign LOINC codes the node serves. */
export const VITAL_SIGNS = {
  "8867-4": ["Heart rate", "beats/min"],
  "9279-1": ["Breathing rate", "breaths/min"],
  "8310-5": ["Body temperature", "°C"],
  "8480-6": ["Blood pressure, upper (systolic)", "mmHg"],
  "8462-4": ["Blood pressure, lower (diastolic)", "mmHg"],
  "8478-0": ["Mean blood pressure", "mmHg"],
  "2708-6": ["Oxygen in arterial blood", "%"],
  "59408-5": ["Oxygen saturation (finger clip)", "%"],
  "29463-7": ["Body weight", "kg"],
  "8302-2": ["Height", "cm"],
  "39156-5": ["Body mass index", "kg/m²"],
  "9269-2": ["Glasgow coma score", "points"],
  "9187-6": ["Urine output", "mL"],
  "55284-4": ["Blood pressure", "mmHg"],
};

function el(name, attributes = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Time since the record's start, in hours and minutes. */
export function elapsed(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return `${h} h ${String(m).padStart(2, "0")} min`;
}

function round(v) {
  return Math.round(v * 10) / 10;
}

/** One figure: heading, chart (hidden from screen readers) and a table of every point. */
export function seriesFigure(series) {
  const [name, unit] = VITAL_SIGNS[series.code] || [`Code ${series.code}`, ""];
  const figure = document.createElement("figure");
  figure.className = "series";
  const caption = document.createElement("figcaption");
  caption.textContent = `${name} (${unit}), ${series.points.length} readings`;
  figure.append(caption, chart(series.points, name), table(series.points, name, unit));
  return figure;
}

function chart(points, name) {
  const width = 640;
  const height = 220;
  const pad = { left: 48, right: 12, top: 12, bottom: 32 };
  const times = points.map((p) => p[0]);
  const values = points.map((p) => p[1]);
  const t0 = Math.min(...times);
  const t1 = Math.max(...times, t0 + 1);
  let v0 = Math.min(...values);
  let v1 = Math.max(...values);
  if (v0 === v1) {
    v0 -= 1;
    v1 += 1;
  }
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - ((v - v0) / (v1 - v0)) * (height - pad.top - pad.bottom);
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    "aria-hidden": "true",
    focusable: "false",
  });
  svg.append(el("title", {}, name));
  for (const v of [v0, (v0 + v1) / 2, v1]) {
    svg.append(el("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: pad.left - 6, y: y(v) + 4, class: "label", "text-anchor": "end" }, round(v)));
  }
  for (const t of [t0, t1]) {
    svg.append(el("text", { x: x(t), y: height - 10, class: "label", "text-anchor": t === t0 ? "start" : "end" }, elapsed(t)));
  }
  const path = points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
  svg.append(el("path", { d: path, class: "line" }));
  for (const p of points) svg.append(el("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.5, class: "dot" }));
  return svg;
}

function table(points, name, unit) {
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = `Show the ${points.length} readings as a table`;
  const t = document.createElement("table");
  t.createCaption().textContent = name;
  const head = t.createTHead().insertRow();
  for (const text of ["Time since admission", `Value (${unit})`]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = text;
    head.append(th);
  }
  const body = t.createTBody();
  for (const [time, value] of points) {
    const row = body.insertRow();
    row.insertCell().textContent = elapsed(time);
    row.insertCell().textContent = String(value);
  }
  details.append(summary, t);
  return details;
}
