//! The patient page: the key, signed requests to this node's API, and the five sections (key, vital signs, consents, uses, privacy account).

import * as wire from "./postcard.js";
import * as keys from "./keystore.js";
import { seriesFigure } from "./charts.js";

const utf8 = new TextEncoder();
const $ = (id) => document.getElementById(id);

/** What the page knows: the node, the patient code, the key pair. */
const session = { nodeId: null, nodeName: null, patient: null, pair: null };

function say(text) {
  $("error").hidden = true;
  $("status").textContent = text;
}

function fail(error) {
  $("status").textContent = "";
  $("error").textContent = error.message || String(error);
  $("error").hidden = false;
}

/** Runs a button's work, showing what failed instead of failing silently. */
function action(work) {
  return async (event) => {
    if (event) event.preventDefault();
    try {
      await work(event);
    } catch (e) {
      fail(e);
    }
  };
}

async function health() {
  const reply = await fetch("/api/v1/health", { cache: "no-store", credentials: "omit" });
  if (!reply.ok) throw new Error(`The hospital's node did not answer (${reply.status}).`);
  const h = await reply.json();
  // Pinned on first use: a node that later shows another key is not trusted silently.
  const pinned = await keys.load("nodeId");
  if (pinned && pinned !== h.node_id) {
    throw new Error("This node's key differs from the one this browser saw before: ask the hospital before continuing.");
  }
  if (!pinned) await keys.save("nodeId", h.node_id);
  session.nodeId = h.node_id;
  session.nodeName = h.node;
  $("node-name").textContent = h.node;
}

function patientCode() {
  const code = $("code").value.trim().toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(code)) {
    throw new Error("Enter your patient code: the 32 letters (a–f) and digits staff gave you.");
  }
  return code;
}

/** One API request signed with the patient's key (protocol::patient_request). */
async function call(method, path, body) {
  if (!session.pair) throw new Error("Create or import your key first.");
  session.patient = patientCode();
  await keys.save("patient", session.patient);
  const text = body === undefined ? "" : JSON.stringify(body);
  const time = Math.floor(Date.now() / 1000);
  const nonce = wire.toHex(keys.random(16));
  const message = wire.requestMessage({
    node: session.nodeId,
    patient: session.patient,
    method,
    path,
    time,
    nonce,
    bodySha256Hex: wire.toHex(await keys.sha256(utf8.encode(text))),
  });
  const signature = await keys.sign(session.pair.privateKey, message);
  const headers = {
    "x-witmed-patient": session.patient,
    "x-witmed-time": String(time),
    "x-witmed-nonce": nonce,
    "x-witmed-signature": wire.toHex(signature),
  };
  if (body !== undefined) headers["content-type"] = "application/json";
  const reply = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : text,
    cache: "no-store",
    credentials: "omit",
  });
  const json = await reply.json().catch(() => null);
  if (!reply.ok) {
    const detail = json && json.error ? `${json.error.message} (${json.error.code})` : `HTTP ${reply.status}`;
    throw new Error(`The hospital refused: ${detail}`);
  }
  return json;
}

// ---- the key ----

async function showKey() {
  const hex = wire.toHex(await keys.publicBytes(session.pair.publicKey));
  $("public-key").textContent = hex;
  $("download-backup").disabled = false;
}

async function createKey() {
  if (session.pair && !confirm("Replace your key? Staff must enrol the new one, and the old one stops working.")) return;
  session.pair = await keys.generate();
  await keys.save("pair", session.pair);
  await showKey();
  say("A new key was made in this browser. Download a backup, then show your public key to staff.");
}

async function downloadBackup() {
  const text = await keys.backup(session.pair.privateKey);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  link.download = "witmed-patient-key.json";
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  say("Backup downloaded: keep the file private, it is your key.");
}

async function importBackup(event) {
  const file = event.target.files[0];
  if (!file) return;
  session.pair = await keys.restore(await file.text());
  await keys.save("pair", session.pair);
  event.target.value = "";
  await showKey();
  say("Your key was imported into this browser.");
}

// ---- the sections ----

async function refresh() {
  await health();
  const me = await call("GET", "/api/v1/patient/me");
  $("me").textContent = `Age ${me.age_years ?? "unknown"}, sex ${me.sex}.`;
  await Promise.all([showVitals(), showConsents(), showAccount(), showAudit()]);
  say("Your data is shown below.");
}

async function showVitals() {
  const series = await call("GET", "/api/v1/patient/observations");
  const box = $("vitals");
  box.replaceChildren();
  if (series.length === 0) box.textContent = "No vital signs are recorded for you.";
  for (const s of series) box.append(seriesFigure(s));
}

function day(seconds) {
  return new Date(seconds * 1000).toISOString().slice(0, 10);
}

function moment(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

async function showConsents() {
  const tokens = await call("GET", "/api/v1/patient/consents");
  const list = $("consents");
  list.replaceChildren();
  if (tokens.length === 0) list.innerHTML = '<li class="help">You have given no consent.</li>';
  for (const t of tokens) list.append(consentCard(t));
}

function consentCard(t) {
  const li = document.createElement("li");
  li.dataset.token = t.id;
  li.className = t.revoked ? "revoked" : "active";
  const what = document.createElement("p");
  what.textContent = `${t.revoked ? "Withdrawn" : "In force"}: ${t.purposes.join(", ")}, from ${day(t.not_before)} until ${day(t.expires)}.`;
  li.append(what);
  if (!t.revoked) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "revoke";
    button.textContent = "Withdraw this consent";
    button.setAttribute("aria-label", `Withdraw consent ${t.purposes.join(", ")} until ${day(t.expires)}`);
    button.addEventListener("click", action(() => revoke(t.id)));
    li.append(button);
  }
  return li;
}

function checked(name) {
  return [...document.querySelectorAll(`#grant-form input[name="${name}"]:checked`)].map((i) => i.value);
}

/** Signs a payload as an envelope and returns its text form. */
async function seal(domain, payload) {
  const signature = await keys.sign(session.pair.privateKey, wire.envelopeSigningMessage(domain, payload));
  const signer = await keys.publicBytes(session.pair.publicKey);
  return wire.envelopeText(domain, payload, signer, signature);
}

function common() {
  return { node: wire.fromHex(session.nodeId), patient: wire.fromHex(patientCode()) };
}

async function grant() {
  await health();
  const purposes = checked("purpose");
  if (!purposes.some((p) => ["GRU", "HMB", "POA"].includes(p))) {
    throw new Error("Choose at least one kind of research you allow.");
  }
  const now = Math.floor(Date.now() / 1000);
  const days = Number($("duration").value);
  const payload = wire.encodeToken({
    version: 1,
    id: wire.toHex(keys.random(16)),
    ...common(),
    purposes,
    categories: checked("category"),
    modes: checked("mode"),
    notBefore: now - 60,
    expires: now + days * 86400,
    simulated: false,
  });
  await call("POST", "/api/v1/patient/consents", { signed: await seal(wire.TOKEN_DOMAIN, payload) });
  await showConsents();
  say("Your consent is in force from the next research question.");
}

async function revoke(tokenId) {
  await health();
  const payload = wire.encodeRevocation({
    version: 1,
    tokenId,
    ...common(),
    issuedAt: Math.floor(Date.now() / 1000),
  });
  await call("POST", "/api/v1/patient/consents", { signed: await seal(wire.REVOCATION_DOMAIN, payload) });
  await showConsents();
  say("Consent withdrawn: your data is left out of the next research question.");
}

function rows(tbody, lines) {
  tbody.replaceChildren();
  for (const cells of lines) {
    const row = tbody.insertRow();
    for (const c of cells) row.insertCell().textContent = String(c);
  }
}

function eps(v) {
  return Number(v.toPrecision(6)).toString();
}

async function showAccount() {
  const a = await call("GET", "/api/v1/patient/account");
  $("total-epsilon").textContent = eps(a.total_epsilon);
  $("total-delta").textContent = eps(a.total_delta);
  $("answers").textContent = String(a.answers);
  $("cap").textContent = a.cap ? `ε ${eps(a.cap.epsilon)} (set ${moment(a.cap.set_at)})` : "none";
  rows($("windows").tBodies[0], a.per_window.map((w) => [day(w.start), w.seconds / 86400, eps(w.epsilon), eps(w.delta), w.answers]));
  const byResearcher = a.per_researcher.map((r) => [r.researcher, r.answers, eps(r.epsilon)]);
  rows($("by-researcher").tBodies[0], byResearcher.length ? byResearcher : [["No research answer has used your data.", "", ""]]);
}

async function setCap(epsilon) {
  await health();
  const payload = wire.encodeCap({
    version: 1,
    id: wire.toHex(keys.random(16)),
    ...common(),
    epsilon,
    issuedAt: Math.floor(Date.now() / 1000),
  });
  await call("POST", "/api/v1/patient/cap", { signed: await seal(wire.CAP_DOMAIN, payload) });
  await showAccount();
  say(epsilon === null ? "Your cap was removed." : `Your data will be left out once your total ε reaches ${epsilon}.`);
}

// ---- the audit view, checked here against the node's signed head ----

const KINDS = {
  "patient.enrolled": "Your key was enrolled",
  "patient.reenrolled": "Your key was replaced",
  "consent.granted": "You gave consent",
  "consent.revoked": "You withdrew consent",
  "patient.cap": "You set a privacy cap",
};

function bytesOf(value) {
  return typeof value === "string" ? wire.fromHex(value) : Uint8Array.from(value);
}

function same(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Checks a patient view (witmed_node::audit::PatientView::verify, in the browser); throws what failed. */
export async function verifyView(view, nodeKeyHex) {
  const head = view.head;
  if (head.signer !== nodeKeyHex) throw new Error("the log's head is not signed by this node's key");
  if (head.domain !== wire.HEAD_DOMAIN) throw new Error("the log's head is not an audit head");
  const payload = bytesOf(head.payload);
  const message = wire.envelopeSigningMessage(head.domain, payload, head.version);
  if (!(await keys.verify(wire.fromHex(head.signer), bytesOf(head.signature), message))) {
    throw new Error("the node's signature on the log's head does not verify");
  }
  const signed = wire.decodeHead(payload);
  let hash = bytesOf(view.start_hash);
  let seq = BigInt(view.start_seq);
  for (const item of view.items) {
    const expected = seq + 1n;
    if (item.Own) hash = await ownLink(item.Own, view.patient, expected, hash);
    else if (item.Use) hash = await useLink(item.Use, expected, hash);
    else if (item.Other) hash = await otherLink(item.Other, expected, hash);
    else throw new Error(`entry ${expected} is of no known kind`);
    seq = expected;
  }
  if (seq !== signed.seq || !same(hash, signed.hash)) {
    throw new Error(`your entries do not lead to the node's signed head (entry ${signed.seq})`);
  }
  return signed;
}

async function otherLink(other, expected, prev) {
  if (BigInt(other.seq) !== expected) throw new Error(`entry ${expected} is missing or moved`);
  return keys.sha256(wire.linkBytes(expected, prev, bytesOf(other.digest)));
}

async function ownLink(entry, patient, expected, prev) {
  if (entry.subject !== patient) throw new Error(`entry ${expected} was edited`);
  return fullLink(entry, expected, prev);
}

/** A use of the patient's data: an entry in full that records a research use. */
async function useLink(entry, expected, prev) {
  if (!entry.research) throw new Error(`entry ${expected} was edited`);
  return fullLink(entry, expected, prev);
}

/** An entry shown in full: its content hashes to its link, which follows `prev`. */
async function fullLink(entry, expected, prev) {
  const link = entry.chain;
  if (!link) throw new Error(`entry ${expected} was edited`);
  if (BigInt(link.seq) !== expected) throw new Error(`entry ${expected} was moved`);
  const digest = await keys.sha256(wire.auditContentBytes(entry, bytesOf(link.salt)));
  const hash = await keys.sha256(wire.linkBytes(expected, bytesOf(link.prev), digest));
  if (!same(hash, bytesOf(link.hash))) throw new Error(`entry ${expected} was edited`);
  if (!same(bytesOf(link.prev), prev)) throw new Error(`the link before entry ${expected} is broken`);
  return hash;
}

// ---- each use of the patient's data, from the log's entries of the answers that included them ----

/** DUO purpose codes in plain words (the consent form's). */
const PURPOSES = {
  HMB: "Health and medical research",
  GRU: "Any research",
  POA: "Population and ancestry research",
};

/** What a research answer computed, in plain words (`protocol::query::Aggregate::kind`). */
const AGGREGATES = {
  count: "How many patients",
  sum: "A total over patients",
  mean: "An average over patients",
  histogram: "How patients spread over ranges (histogram)",
  quantiles: "Typical values, such as the median (quantiles)",
  survival: "How long patients stayed well (survival curve)",
  table: "How often combinations occur (table)",
  regression: "How one measure relates to others (regression)",
};

const MODES_IN_WORDS = {
  dp: "Noise added by this hospital (differential privacy)",
  encrypted: "Encrypted; only the hospitals' noisy total opened",
};

function purposeInWords(code) {
  if (PURPOSES[code]) return `${PURPOSES[code]} (${code})`;
  if (code.startsWith("DS-")) return `Research on one disease (${code})`;
  return code;
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function privacyCost(r) {
  return r.delta > 0 ? `ε ${eps(r.epsilon)}, δ ${eps(r.delta)}` : `ε ${eps(r.epsilon)}`;
}

/** One card per use, newest first: what was computed and when, then who, project, purpose, protection, cost. */
function showUses(view) {
  const uses = view.items.filter((i) => i.Use && i.Use.research).map((i) => i.Use).reverse();
  const list = $("uses");
  list.replaceChildren();
  if (uses.length === 0) list.innerHTML = '<li class="help">No research answer has used your data.</li>';
  for (const entry of uses) list.append(useCard(entry));
  return uses.length;
}

function useCard(entry) {
  const r = entry.research;
  const li = document.createElement("li");
  li.dataset.use = r.query_id;
  const title = document.createElement("p");
  const what = document.createElement("b");
  what.dataset.field = "what";
  what.textContent = AGGREGATES[r.aggregate] || r.aggregate;
  const when = document.createElement("span");
  when.dataset.field = "when";
  when.textContent = moment(entry.at);
  title.append(what, ", ", when);
  const details = document.createElement("dl");
  details.className = "totals";
  const fields = [
    ["researcher", "Researcher", `${r.researcher_name} (code ${wire.toHex(Uint8Array.from(r.researcher))})`],
    ["institution", "Institution", r.institution],
    ["project", "Project", r.project || "none named"],
    ["purpose", "Purpose", purposeInWords(r.purpose)],
    ["protection", "Protection", MODES_IN_WORDS[r.mode] || r.mode],
    ["cost", "Privacy cost", privacyCost(r)],
  ];
  for (const [field, label, text] of fields) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.dataset.field = field;
    dd.textContent = text;
    details.append(dt, dd);
  }
  li.append(title, details);
  return li;
}

async function showAudit() {
  const reply = await call("GET", "/api/v1/patient/audit");
  const view = reply.view;
  const entries = view.items.filter((i) => i.Own).map((i) => i.Own);
  rows($("audit").tBodies[0], entries.map((e) => [moment(e.at), KINDS[e.kind] || e.kind, e.detail]));
  const uses = showUses(view);
  const status = $("audit-status");
  try {
    const head = await verifyView(view, session.nodeId);
    status.className = "verified";
    status.textContent = `Verified: these ${plural(entries.length, "entry", "entries")} about you and ${plural(uses, "use", "uses")} of your data are in the node's signed log (up to entry ${head.seq}, signed ${moment(head.at)}).`;
  } catch (e) {
    status.className = "failed";
    status.textContent = `Not verified: ${e.message}. Tell the hospital's data protection officer.`;
  }
}

// ---- start ----

async function start() {
  $("create-key").addEventListener("click", action(createKey));
  $("download-backup").addEventListener("click", action(downloadBackup));
  $("import-backup").addEventListener("change", action(importBackup));
  $("refresh").addEventListener("click", action(refresh));
  $("grant-form").addEventListener("submit", action(grant));
  $("cap-form").addEventListener("submit", action(() => {
    const value = Number($("cap-epsilon").value);
    if ($("cap-epsilon").value === "" || !Number.isFinite(value) || value < 0) throw new Error("Enter a cap: a number of 0 or more.");
    return setCap(value);
  }));
  $("remove-cap").addEventListener("click", action(() => setCap(null)));
  const code = await keys.load("patient");
  if (code) $("code").value = code;
  session.pair = (await keys.load("pair")) || null;
  if (session.pair) await showKey();
  await health();
  document.body.dataset.ready = "true";
}

action(start)();
