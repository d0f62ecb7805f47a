//! The canonical bytes the node checks, built in the browser: postcard encoding of consent tokens, revocations and privacy caps, the envelope signing message, the signed request message and the audit chain's hashed bytes.
// Postcard (https://postcard.jamesmunns.com/wire-format): unsigned integers
// as LEB128 varints, signed ones zigzag first, strings as a varint length and
// UTF-8, fixed arrays as their bytes alone, sequences and sets as a varint
// count then the items (a set in its sorted order), enums as the variant's
// index, Option as 0 or 1 then the value, f64 as 8 bytes little-endian.
// Every function here is pure (no IO), so `node` can run them in a test.

/** Data categories in the order of the Rust enum (`protocol::vocab::Category`). */
export const CATEGORIES = ["demographics", "vital-signs", "labs", "conditions", "encounters"];
/** Privacy modes in the order of the Rust enum (`protocol::vocab::Mode`). */
export const MODES = ["dp", "encrypted"];

export const TOKEN_DOMAIN = "witmed/consent-token/v1";
export const REVOCATION_DOMAIN = "witmed/consent-revocation/v1";
export const CAP_DOMAIN = "witmed/privacy-cap/v1";
export const HEAD_DOMAIN = "witmed/audit-head/v1";
export const ENVELOPE_VERSION = 1;

const utf8 = new TextEncoder();
const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

/** A growing byte buffer with postcard's primitive encodings. */
export class Writer {
  constructor() {
    this.parts = [];
  }
  byte(b) {
    this.parts.push(b & 0xff);
    return this;
  }
  raw(bytes) {
    for (const b of bytes) this.parts.push(b);
    return this;
  }
  /** An unsigned integer (u16/u32/u64/usize) as a varint. */
  varint(value) {
    let n = BigInt(value);
    if (n < 0n || n > U64_MAX) throw new RangeError(`varint out of range: ${value}`);
    do {
      let b = Number(n & 0x7fn);
      n >>= 7n;
      if (n > 0n) b |= 0x80;
      this.parts.push(b);
    } while (n > 0n);
    return this;
  }
  /** A signed i64: zigzag, then varint. */
  i64(value) {
    const n = BigInt(value);
    if (n < I64_MIN || n > I64_MAX) throw new RangeError(`i64 out of range: ${value}`);
    const zigzag = n >= 0n ? n << 1n : ((-n) << 1n) - 1n;
    return this.varint(zigzag);
  }
  bool(value) {
    return this.byte(value ? 1 : 0);
  }
  string(text) {
    const bytes = utf8.encode(text);
    return this.varint(bytes.length).raw(bytes);
  }
  /** A fixed-size byte array (`[u8; N]`): the bytes alone. */
  fixed(bytes, length) {
    if (bytes.length !== length) throw new RangeError(`expected ${length} bytes, got ${bytes.length}`);
    return this.raw(bytes);
  }
  f64(value) {
    const view = new DataView(new ArrayBuffer(8));
    view.setFloat64(0, value, true);
    return this.raw(new Uint8Array(view.buffer));
  }
  finish() {
    return Uint8Array.from(this.parts);
  }
}

/** Lowercase hex of bytes. */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Bytes of a hex string; throws on anything else. */
export function fromHex(text) {
  if (typeof text !== "string" || text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new Error("not a hex string");
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Standard base64 (with padding), as the envelope's text form writes it. */
export function toBase64(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** The indexes of `names` in `order`, sorted and without duplicates: a BTreeSet of a Rust enum. */
function enumSet(names, order, what) {
  const indexes = names.map((name) => {
    const i = order.indexOf(name);
    if (i < 0) throw new Error(`unknown ${what}: ${name}`);
    return i;
  });
  return [...new Set(indexes)].sort((a, b) => a - b);
}

/** `policies::consent::Token`. */
export function encodeToken(t) {
  const w = new Writer()
    .varint(t.version)
    .string(t.id)
    .fixed(t.node, 32)
    .fixed(t.patient, 16)
    .varint(t.purposes.length);
  for (const p of t.purposes) w.string(p);
  const categories = enumSet(t.categories, CATEGORIES, "category");
  w.varint(categories.length);
  for (const c of categories) w.varint(c);
  const modes = enumSet(t.modes, MODES, "mode");
  w.varint(modes.length);
  for (const m of modes) w.varint(m);
  return w.i64(t.notBefore).i64(t.expires).bool(t.simulated).finish();
}

/** `policies::consent::Revocation`. */
export function encodeRevocation(r) {
  return new Writer()
    .varint(r.version)
    .string(r.tokenId)
    .fixed(r.node, 32)
    .fixed(r.patient, 16)
    .i64(r.issuedAt)
    .finish();
}

/** `policies::cap::CapRequest` (`epsilon` null removes the cap). */
export function encodeCap(c) {
  const w = new Writer().varint(c.version).string(c.id).fixed(c.node, 32).fixed(c.patient, 16);
  if (c.epsilon === null || c.epsilon === undefined) w.byte(0);
  else w.byte(1).f64(c.epsilon);
  return w.i64(c.issuedAt).finish();
}

/** `Envelope::signing_message`: what a signature over a payload covers. */
export function envelopeSigningMessage(domain, payload, version = ENVELOPE_VERSION) {
  const head = utf8.encode("witmed-envelope\0");
  const domainBytes = utf8.encode(domain);
  const view = new DataView(new ArrayBuffer(16));
  view.setUint32(0, version, true);
  view.setUint32(4, domainBytes.length, true);
  view.setBigUint64(8, BigInt(payload.length), true);
  const lengths = new Uint8Array(view.buffer);
  return concat([head, lengths.slice(0, 8), domainBytes, lengths.slice(8), payload]);
}

/** The envelope's text form (`Envelope::to_text`), which the API takes as `signed`. */
export function envelopeText(domain, payload, signer, signature) {
  return JSON.stringify({
    witmed_envelope: ENVELOPE_VERSION,
    domain,
    signer: toHex(signer),
    payload: toBase64(payload),
    signature: toBase64(signature),
  });
}

/** `protocol::patient_request::message`: the lines a patient signs for one API request. */
export function requestMessage(r) {
  return utf8.encode(
    [
      "witmed/patient-request",
      "1",
      r.node,
      r.patient,
      r.method,
      r.path,
      String(r.time),
      r.nonce,
      r.bodySha256Hex,
    ].join("\n"),
  );
}

/** The bytes an own audit entry's digest is the SHA-256 of (`audit::chain::Entry::digest`). */
export function auditContentBytes(entry, salt) {
  const research = entry.research ?? null;
  const domain = research === null ? "witmed/audit-content/v2\0" : "witmed/audit-content/v3\0";
  const w = new Writer()
    .raw(utf8.encode(domain))
    .fixed(salt, 16)
    .i64(entry.at)
    .string(entry.kind)
    .string(entry.actor)
    .string(entry.detail);
  if (entry.subject === null || entry.subject === undefined) w.byte(0);
  else w.byte(1).fixed(fromHex(entry.subject), 16);
  if (research !== null) researchUse(w, research);
  return w.finish();
}

/** `audit::ResearchUse`, as an entry's digest covers it (no Option tag: the v3 domain says it is there). */
function researchUse(w, r) {
  w.varint(r.charge)
    .string(r.query_id)
    .fixed(Uint8Array.from(r.researcher), 16)
    .string(r.researcher_name)
    .string(r.institution)
    .string(r.project)
    .string(r.purpose)
    .string(r.aggregate)
    .string(r.mode)
    .f64(r.epsilon)
    .f64(r.delta);
}

/** The bytes a chain link's hash is the SHA-256 of (`audit::chain::link_hash`). */
export function linkBytes(seq, prev, digest) {
  const view = new DataView(new ArrayBuffer(8));
  view.setBigUint64(0, BigInt(seq), false);
  return concat([utf8.encode("witmed/audit-link/v1\0"), new Uint8Array(view.buffer), prev, digest]);
}

/** A postcard reader, for the one payload the page reads: the audit head. */
class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.at = 0;
  }
  byte() {
    if (this.at >= this.bytes.length) throw new Error("truncated");
    return this.bytes[this.at++];
  }
  varint() {
    let n = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      const b = this.byte();
      n |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return n;
    }
    throw new Error("varint too long");
  }
  i64() {
    const z = this.varint();
    return z & 1n ? -((z + 1n) >> 1n) : z >> 1n;
  }
  fixed(length) {
    if (this.at + length > this.bytes.length) throw new Error("truncated");
    const out = this.bytes.slice(this.at, this.at + length);
    this.at += length;
    return out;
  }
}

/** `audit::chain::Head` from its payload bytes. */
export function decodeHead(payload) {
  const r = new Reader(payload);
  const head = { version: Number(r.varint()), seq: r.varint(), hash: r.fixed(32), at: Number(r.i64()) };
  if (r.at !== payload.length) throw new Error("trailing bytes after the head");
  return head;
}

/** Joins byte arrays. */
export function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
