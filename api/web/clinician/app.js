// The clinician page: the ward's patients with their latest vitals, NEWS2 and trend, open alerts newest first, live.
//
// The staff token stays in this page's memory only and goes in the Authorization header of every
// request. Alerts arrive over the node's server-sent-event stream read with fetch (EventSource
// cannot send that header); each alert refreshes the ward. Vitals are refreshed every few seconds.

const WARD = "/api/v1/staff/ward";
const STREAM = "/api/v1/staff/alerts/stream";
const REFRESH_MS = 5000;
const VITALS = [
  ["9279-1", "Respiration rate", "/min"],
  ["oxygen-saturation", "SpO2", "%"],
  ["3150-0", "Inhaled O2", "%"],
  ["8480-6", "Systolic BP", "mm[Hg]"],
  ["8867-4", "Pulse", "/min"],
  ["67775-7", "ACVPU", ""],
  ["8310-5", "Temperature", "Cel"],
];
const ACVPU = ["A", "C", "V", "P", "U"];

let token = null;
let clinician = "";
let selected = null;

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  const headers = Object.assign({ authorization: `Bearer ${token}` }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let detail = `${response.status}`;
    try { const body = await response.json(); detail = `${body.code}: ${body.message}`; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${detail}`);
  }
  return response;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

const SATURATION = ["59408-5", "2708-6"];

// The newest reading of a code ("oxygen-saturation": pulse oximetry or arterial, whichever is newer).
function newest(readings, code) {
  const codes = code === "oxygen-saturation" ? SATURATION : [code];
  return readings.filter((r) => codes.includes(r.code)).reduce((a, b) => (!a || b.time >= a.time ? b : a), null);
}

function latestValue(patient, code) {
  const reading = newest(patient.latest, code);
  if (!reading) return "–";
  if (code === "67775-7") return ACVPU[reading.value] || "?";
  if (code === "3150-0") return reading.value > 21 ? `O2 ${reading.value.toFixed(0)}%` : "air";
  return Number.isInteger(reading.value) ? `${reading.value}` : reading.value.toFixed(1);
}

function bandLabel(news2) {
  return news2 ? `${news2.total} ${news2.band}` : "incomplete";
}

function trendLabel(trend) {
  return { rising: "↑ rising", falling: "↓ falling", steady: "→ steady" }[trend] || "";
}

function renderWard(ward) {
  const rows = $("ward-rows");
  rows.replaceChildren();
  for (const p of ward.patients) {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    tr.dataset.patient = p.patient;
    tr.append(cell(p.patient.slice(0, 12)));
    const score = cell(bandLabel(p.news2), p.news2 ? `band band-${p.news2.band}` : "");
    if (!p.news2) score.title = `missing: ${p.missing.join(", ")}`;
    tr.append(score, cell(trendLabel(p.trend)));
    for (const code of ["9279-1", "oxygen-saturation", "3150-0", "8480-6", "8867-4", "67775-7", "8310-5"]) {
      tr.append(cell(latestValue(p, code)));
    }
    tr.append(cell(`${p.open_alerts}`));
    tr.addEventListener("click", () => showDetail(p.patient));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") showDetail(p.patient); });
    rows.append(tr);
  }
  renderAlerts(ward.alerts);
}

function renderAlerts(alerts) {
  const list = $("alerts");
  list.replaceChildren();
  for (const alert of alerts) {
    const li = document.createElement("li");
    li.className = `band-${alert.band}`;
    li.dataset.alert = alert.id;
    const when = new Date(alert.at * 1000).toLocaleTimeString();
    const text = document.createElement("span");
    text.textContent = `${when} patient ${alert.patient.slice(0, 12)}: NEWS2 ${alert.score} (${alert.band}) `;
    const ack = document.createElement("button");
    ack.type = "button";
    ack.textContent = "Acknowledge";
    ack.addEventListener("click", () => acknowledge(alert.id));
    li.append(text, ack);
    list.append(li);
  }
  $("no-alerts").hidden = alerts.length > 0;
}

async function refreshWard() {
  try {
    const ward = await (await api(WARD)).json();
    renderWard(ward);
    if (selected) await showDetail(selected);
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

async function acknowledge(id) {
  try {
    await api(`/api/v1/staff/alerts/${encodeURIComponent(id)}/ack`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ by: clinician }),
    });
    await refreshWard();
  } catch (e) {
    showError(e.message);
  }
}

// One SVG line chart of (time, value) points.
function chart(title, unit, points) {
  const ns = "http://www.w3.org/2000/svg";
  const figure = document.createElement("figure");
  figure.className = "chart";
  const caption = document.createElement("figcaption");
  caption.textContent = `${title}${unit ? ` (${unit})` : ""}: ${points.length} readings`;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 600 120");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", caption.textContent);
  if (points.length > 0) {
    const ts = points.map((p) => p[0]);
    const vs = points.map((p) => p[1]);
    const [t0, t1] = [Math.min(...ts), Math.max(...ts)];
    const [v0, v1] = [Math.min(...vs), Math.max(...vs)];
    const x = (t) => 30 + (t1 > t0 ? ((t - t0) / (t1 - t0)) * 560 : 280);
    const y = (v) => 110 - (v1 > v0 ? ((v - v0) / (v1 - v0)) * 100 : 50);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
    const low = document.createElementNS(ns, "text");
    low.setAttribute("x", "2"); low.setAttribute("y", "112"); low.textContent = `${v0}`;
    const high = document.createElementNS(ns, "text");
    high.setAttribute("x", "2"); high.setAttribute("y", "10"); high.textContent = `${v1}`;
    svg.append(line, low, high);
  }
  figure.append(caption, svg);
  return figure;
}

async function showDetail(patient) {
  selected = patient;
  try {
    const detail = await (await api(`${WARD}/${encodeURIComponent(patient)}`)).json();
    $("detail-section").hidden = false;
    $("detail-title").textContent = `Patient ${patient.slice(0, 12)}`;
    $("detail-news2").textContent = detail.news2
      ? `NEWS2 ${detail.news2.total} (${detail.news2.band}), SpO2 scale ${detail.news2.scale === "two" ? 2 : 1}`
      : `No fresh NEWS2 set: missing ${detail.missing.join(", ")}`;
    const charts = [chart("NEWS2", "", detail.series.map((s) => [s.at, s.total]))];
    for (const [code, name, unit] of VITALS) {
      const codes = code === "oxygen-saturation" ? SATURATION : [code];
      const points = detail.readings.filter((r) => codes.includes(r.code)).map((r) => [r.time, r.value]);
      if (points.length > 0) charts.push(chart(name, unit, points));
    }
    $("charts").replaceChildren(...charts);
  } catch (e) {
    showError(e.message);
  }
}

// Reads the server-sent-event stream; every alert refreshes the ward. Reconnects after a pause.
async function streamAlerts() {
  for (;;) {
    try {
      const response = await api(STREAM, { headers: { accept: "text/event-stream" } });
      $("live").textContent = "Live: alerts arrive as they are raised.";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (/^event: ?alert$/m.test(event)) await refreshWard();
        }
      }
    } catch (e) {
      showError(e.message);
    }
    $("live").textContent = "Reconnecting…";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

$("signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  clinician = $("clinician").value.trim();
  $("token").value = "";
  try {
    renderWard(await (await api(WARD)).json());
  } catch (e) {
    showError(e.message);
    return;
  }
  $("signin").hidden = true;
  $("alerts-section").hidden = false;
  $("ward-section").hidden = false;
  streamAlerts();
  setInterval(refreshWard, REFRESH_MS);
});
