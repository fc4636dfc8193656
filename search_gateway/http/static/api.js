// Talking to the gateway: requests, the NDJSON progress stream, and errors in plain words.
// Everything here is same-origin: the page is served by the gateway it calls. When the
// gateway requires an API key, every call carries it in the X-API-Key header (key.js).
import { askForKey, forgetKey, storedKey } from "./key.js";

/** An error a person can read: `message` says what happened and what to do. */
export class PlainError extends Error {
  constructor(message, { detail = "", status = 0, code = "" } = {}) {
    super(message);
    this.name = "PlainError";
    this.detail = detail;   // the gateway's own sentence, shown in smaller print
    this.status = status;
    this.code = code;
  }
}

const UNAVAILABLE = "The search service is unavailable right now. Please try again in a moment.";

/** Turns a gateway error answer ({error, detail}) into a PlainError. */
function plainError(status, body, retryAfter) {
  const code = (body && body.error) || "";
  const detail = (body && body.detail) || "";
  const wait = retryAfter ? ` Wait ${retryAfter} s and try again.` : " Try again in a moment.";
  const byCode = {
    upload_too_large: "That image is too large. Please pick a smaller file (or save it at a lower quality).",
    not_an_image: "That file is not an image. Please pick a JPEG, PNG, WebP or GIF picture.",
    empty_image: "That file is empty. Please pick another picture.",
    truncated_image: "That image looks damaged or incomplete. Please pick another picture.",
    too_many_pixels: "That image has too many pixels. Please pick a smaller picture.",
    bad_image: "That image could not be read. Please pick another picture.",
    no_text_tower: "This model cannot search by text. Pick a model marked “text”, or search with an image.",
    unknown_model: "That model is not available on this server. Please pick another one.",
    rate_limited: "Too many searches at once." + wait,
    unauthorized: "This server needs an API key. Search again (or load the models again) to enter it.",
    backend_unavailable: UNAVAILABLE,
    download_failed: "The result's picture could not be downloaded from its site. It may have moved or been removed.",
    url_refused: "The result's address is not allowed to be fetched by this server.",
    not_found: "That picture is not in the gallery for the model picked (or not stored yet). " +
      "Pick the model its results came from, or try again in a moment.",
  };
  let message = byCode[code];
  if (!message) {
    if (status === 413) message = byCode.upload_too_large;
    else if (status === 415) message = byCode.not_an_image;
    else if (status === 429) message = byCode.rate_limited;
    else if (status >= 500) message = UNAVAILABLE;
    else message = detail || `The request failed (HTTP ${status}).`;
  }
  return new PlainError(message, { detail: message === detail ? "" : detail, status, code });
}

async function readError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status alone has to do.
  }
  return plainError(response.status, body, response.headers.get("Retry-After"));
}

/**
 * fetch() with the API key (when one is kept) and network failures turned into plain
 * words; aborts pass through. A 401 asks for a key (again, if the one sent was refused)
 * and repeats the request with it; cancelling the dialog gives the 401's error.
 */
async function send(url, init = {}, { ask = true } = {}) {
  for (;;) {
    const key = storedKey();
    const headers = new Headers(init.headers || {});
    if (key) headers.set("X-API-Key", key);
    let response;
    try {
      response = await fetch(url, { ...init, headers });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new PlainError(UNAVAILABLE, { detail: "The server could not be reached." });
    }
    if (response.status === 401 && ask) {
      if (key) forgetKey(key);
      const typed = await askForKey({ rejected: Boolean(key) });
      if (typed && !init.signal?.aborted) continue;
    }
    if (!response.ok) throw await readError(response);
    return response;
  }
}

/** Whether calls carry a key: then pictures must be fetched with it too (see `imageUrl`). */
export function usingKey() {
  return Boolean(storedKey());
}

/**
 * A URL an <img> can show for a gateway picture (a result thumbnail). With a key kept,
 * the picture is fetched with the key in its header and shown from a blob: URL, so the
 * key never goes into a link; the caller revokes the blob: URL when done with it. A 401
 * here does not open the key dialog: each picture would ask again on its retry.
 */
export async function imageUrl(url, signal) {
  const response = await send(url, { headers: { Accept: "image/*" }, signal }, { ask: false });
  return URL.createObjectURL(await response.blob());
}

export async function listModels() {
  const response = await send("/models", { headers: { Accept: "application/json" } });
  return response.json();
}

/**
 * What this gateway's search offers beyond the web, read from its OpenAPI description:
 * `gallery` (false when GATEWAY_GALLERY=off lists the sources as web-only) and `tags`
 * (the vocabulary a gallery search may filter by). Null when the description cannot be
 * read; the page then offers the gallery and learns otherwise from a search's 400.
 */
export async function searchOptions() {
  let doc;
  try {
    const response = await send("/openapi.json", { headers: { Accept: "application/json" } }, { ask: false });
    doc = await response.json();
  } catch {
    return null;
  }
  const params = doc?.paths?.["/search/stream"]?.post?.parameters || [];
  const param = (name) => params.find((p) => p.name === name)?.schema || null;
  const sources = param("sources")?.enum || ["web"];
  return { gallery: sources.some((s) => s.split(",").includes("gallery")), tags: tagVocabulary(param("tags")?.pattern),
    collections: Boolean(param("collections")),
    // The filters of issue 22: null when the server does not declare the parameter (the control is hidden).
    color: param("color") ? vocabulary(param("color")) : null,
    palette: Boolean(param("palette")),
    placement: param("placement") ? vocabulary(param("placement")) : null };
}

/** The names a parameter's schema allows: its enum, its items' enum, or the alternatives of its pattern. */
function vocabulary(schema) {
  const names = Array.isArray(schema.enum) ? schema.enum
    : Array.isArray(schema.items?.enum) ? schema.items.enum : tagVocabulary(schema.pattern);
  return [...new Set(names.map(String).filter(Boolean))];
}

/** The tag names in the OpenAPI pattern `^$|^(a|b\ c)(,(a|b\ c)){0,7}$`, unescaped. */
function tagVocabulary(pattern) {
  const group = /\^\(([^()]*)\)/.exec(pattern || "");
  return group ? group[1].split("|").map((t) => t.replace(/\\(.)/g, "$1")).filter(Boolean) : [];
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") q.set(key, String(value));
  }
  return q.toString();
}

/**
 * Runs a streaming search. `onEvent` gets every progress event (gallery, caption,
 * candidates, downloaded, ranked); the promise resolves with the final body, or rejects
 * with a PlainError (or an AbortError when `signal` aborts). With `like` (a gallery id)
 * the stored picture is the query and nothing is uploaded.
 */
export async function streamSearch({ file, text, like, model, maxResults, attention, sources, tags, collections,
  positive, negative, color, palette, placement }, onEvent, signal) {
  const list = (names) => names?.length ? names.join(",") : "";
  const params = { embedding_model: model, max_results: maxResults, include_patch_attention: attention && !!file && !like,
    sources, tags: list(tags), like, collections: list(collections),
    // Refinement by example (result ids) and the colour / placement filters; empty ones are not sent.
    positive: list(positive), negative: list(negative), color, palette, placement: list(placement) };
  let body;
  if (!like && !file && !text) {
    body = undefined;  // a refinement by marks alone: the ids are the query
  } else if (!like) {
    body = new FormData();
    if (file) body.append("file", file, file.name || "query");
    else body.append("text", text);
  }
  const response = await send(`/search/stream?${query(params)}`, { method: "POST", body, signal });

  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  let final = null;
  const handle = (line) => {
    if (!line.trim()) return;
    const event = JSON.parse(line);
    if (event.event === "final") final = event;
    else if (event.event === "error") throw plainError(event.status, event);
    else onEvent(event);
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        handle(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
      }
    }
    handle(buffered + decoder.decode());
  } catch (err) {
    if (err.name === "AbortError" || err instanceof PlainError) throw err;
    // The connection broke mid-stream (server restarted, network gone).
    throw new PlainError(UNAVAILABLE, { detail: "The search was interrupted." });
  }
  if (!final) throw new PlainError(UNAVAILABLE, { detail: "The search ended without an answer." });
  return final;
}

// ---------- feedback marks (POST/DELETE /feedback): kept by the server per API key

/** Stores one mark; resolves with {id, result, relevant, model, at}. 404 feedback_off when the server keeps none. */
export async function saveMark({ queryRef, result, relevant }) {
  const response = await send("/feedback", { method: "POST", body: JSON.stringify({ query_ref: queryRef, result, relevant }),
    headers: { "Content-Type": "application/json", Accept: "application/json" } }, { ask: false });
  return response.json();
}

export async function deleteMark(id) {
  await send(`/feedback/${encodeURIComponent(id)}`, { method: "DELETE" }, { ask: false });
}

/** The patch-attention analysis of one result against the query image. */
export async function analyzeAttention({ file, candidateUrl, model }, signal) {
  const form = new FormData();
  form.append("query_file", file, file.name || "query");
  const params = { candidate_url: candidateUrl, embedding_model: model, include_visualizations: true };
  const response = await send(`/analyze-attention?${query(params)}`, { method: "POST", body: form, signal });
  return response.json();
}

// ---------- private collections (GET/POST /collections, images in and out)

/** A collection route's error in words about collections (the search's "not_found" is about the gallery). */
function collectionError(err, name) {
  if (!(err instanceof PlainError)) return err;
  const words = {
    404: name ? `There is no collection “${name}” (any more). Load the list again.`
      : "This server keeps no private collections (its gallery is off).",
    409: `A collection named “${name}” already exists. Pick another name.`,
    400: err.detail ? `That did not work: ${err.detail}` : err.message,
  }[err.status];
  return words ? new PlainError(words, { detail: err.detail && !words.includes(err.detail) ? err.detail : "",
    status: err.status, code: err.code }) : err;
}

async function collectionCall(name, url, init) {
  try {
    return await send(url, { ...init, headers: { Accept: "application/json", ...(init?.headers || {}) } });
  } catch (err) {
    throw collectionError(err, name);
  }
}

const path = (name) => `/collections/${encodeURIComponent(name)}`;

/** The caller's collections ({name, images, ...}), `web` (shared: true) first. */
export async function listCollections() {
  return (await (await collectionCall("", "/collections")).json()).collections || [];
}

export async function createCollection(name) {
  const response = await collectionCall(name, "/collections",
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }) });
  return response.json();
}

export async function deleteCollection(name) {
  await collectionCall(name, path(name), { method: "DELETE" });
}

/**
 * One page of the collection's pictures, in id order: {images: [{id, filename, thumbnail,
 * added}], total, next}; `next` (null on the last page) is the `cursor` of the following one.
 */
export async function listImages(name, { limit, cursor } = {}, signal) {
  const query = new URLSearchParams();
  if (limit) query.set("limit", String(limit));
  if (cursor) query.set("cursor", cursor);
  const asked = query.toString();
  return (await collectionCall(name, `${path(name)}/images${asked ? `?${asked}` : ""}`, { signal })).json();
}

export async function deleteImage(name, id) {
  await collectionCall(name, `${path(name)}/images/${encodeURIComponent(id)}`, { method: "DELETE" });
}

/**
 * Sends one batch of files; resolves with one {input, status, id?, reason?} per file, in
 * order. A 413 (the batch is over the server's limit) rejects with status 413 so the
 * caller can split the batch.
 */
export async function uploadImages(name, files, signal) {
  const form = new FormData();
  for (const file of files) form.append("file", file, file.relativePath || file.webkitRelativePath || file.name || "file");
  const response = await send(`${path(name)}/images`, { method: "POST", body: form, signal }).catch((err) => {
    throw err.status === 413 ? err : collectionError(err, name);
  });
  return (await response.json()).results || [];
}
