//! The patient's key in this browser: made with WebCrypto Ed25519, kept in IndexedDB as a CryptoKey, backed up to and restored from a file; never sent anywhere.

const DB_NAME = "witmed-patient";
const STORE = "settings";
const ALGORITHM = { name: "Ed25519" };

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transact(mode, work) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/** Reads a saved value (`undefined` if none). */
export function load(name) {
  return transact("readonly", (store) => store.get(name));
}

/** Saves a value (structured clone: CryptoKey objects are kept as keys). */
export function save(name, value) {
  return transact("readwrite", (store) => store.put(value, name));
}

/** Forgets a value. */
export function forget(name) {
  return transact("readwrite", (store) => store.delete(name));
}

/** A new Ed25519 key pair (extractable, so the patient can keep a backup file). */
export async function generate() {
  return crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
}

/** The raw 32 bytes of a public key. */
export async function publicBytes(publicKey) {
  return new Uint8Array(await crypto.subtle.exportKey("raw", publicKey));
}

/** The backup file's content: the private key as a JWK (it holds the public key too). */
export async function backup(privateKey) {
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  return JSON.stringify({ witmed_patient_key: 1, jwk }, null, 2);
}

/** A key pair from a backup file's text; throws with a plain message if it is not one. */
export async function restore(text) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error("This file is not a witmed key backup (it is not JSON).");
  }
  const jwk = parsed && parsed.jwk;
  if (!jwk || jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || !jwk.d || !jwk.x) {
    throw new Error("This file is not a witmed key backup (no Ed25519 private key in it).");
  }
  const privateKey = await crypto.subtle.importKey("jwk", jwk, ALGORITHM, true, ["sign"]);
  const { d: _secret, ...publicJwk } = jwk;
  publicJwk.key_ops = ["verify"];
  const publicKey = await crypto.subtle.importKey("jwk", publicJwk, ALGORITHM, true, ["verify"]);
  return { privateKey, publicKey };
}

/** An Ed25519 signature (64 bytes) over `bytes`. */
export async function sign(privateKey, bytes) {
  return new Uint8Array(await crypto.subtle.sign(ALGORITHM, privateKey, bytes));
}

/** Whether `signature` over `bytes` verifies with the raw public key `keyBytes`. */
export async function verify(keyBytes, signature, bytes) {
  const key = await crypto.subtle.importKey("raw", keyBytes, ALGORITHM, false, ["verify"]);
  return crypto.subtle.verify(ALGORITHM, key, signature, bytes);
}

/** SHA-256 of bytes. */
export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** `n` random bytes. */
export function random(n) {
  return crypto.getRandomValues(new Uint8Array(n));
}
