// Relevant / not relevant marks on the results, the "Marked" strip and the Refine action.
// Marks live here, in the page, for the query they were made on: Refine sends them as
// `positive` / `negative` (the results' ids) and the server leaves the marked results out
// of its answer, so the strip is where they stay visible (and can be undone). When the
// reply carried a `query_ref`, each mark is also stored on the server (POST /feedback) and
// an undone one deleted again; a server that keeps no marks is said once, quietly.
import { PlainError, deleteMark, imageUrl, saveMark, usingKey } from "./api.js";
import { make } from "./dom.js";

const MAX_EACH = 20;  // the server takes at most 20 positive and 20 negative ids
const THUMB_SIZE = 160;
const SVG = "http://www.w3.org/2000/svg";
// A thumb (Material Icons' thumb_up outline, Apache-2.0); thumbs down is the same turned over.
const THUMB_PATH = "M1 21h4V9H1v12zm22-11c0-1.1-.9-2-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 " +
  "7.59 7.59C7.22 7.95 7 8.45 7 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z";

const $ = (id) => document.getElementById(id);
const el = {
  panel: $("refine-panel"), marked: $("marked"), refine: $("refine"), clear: $("clear-marks"),
  note: $("feedback-note"), count: $("marks-count"),
};

const state = {
  marks: new Map(),   // result id -> {result, relevant, queryRef, feedbackId, saving, thumbUrl}
  queryRef: null,     // the query_ref of the reply whose cards are shown
  saves: new Map(),   // result id -> its last POST /feedback (and the DELETE after it), so they run in order
  feedback: "on",     // "off" once the server said it keeps no marks (feedback_off): then local only
  noted: false,       // a failure to store a mark has been said (once is enough)
  busy: false,        // a search is running: Refine waits
  onRefine: null,
};

function thumbIcon(down) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.classList.add("thumb-icon");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", THUMB_PATH);
  if (down) path.setAttribute("transform", "rotate(180 12 12)");
  svg.append(path);
  return svg;
}

const titleOf = (result, index) => result.title || (index === undefined ? "a result" : `result ${index + 1}`);
const counts = () => {
  let positive = 0;
  for (const mark of state.marks.values()) if (mark.relevant) positive += 1;
  return { positive, negative: state.marks.size - positive };
};

/** The ids to send: {positive, negative}. */
export function markedIds() {
  const positive = [];
  const negative = [];
  for (const [id, mark] of state.marks) (mark.relevant ? positive : negative).push(id);
  return { positive, negative };
}

/** The thumbs up / down of one result card (only a result with an id can be marked). */
export function markButtons(result, index) {
  if (!result.id) return null;
  const label = titleOf(result, index);
  const button = (relevant) => {
    const b = make("button", { type: "button", className: `mark ${relevant ? "mark-up" : "mark-down"}`,
      "aria-pressed": "false", title: relevant ? "Relevant" : "Not relevant", dataset: { relevant: String(relevant) } },
    thumbIcon(!relevant),
    make("span", { className: "visually-hidden", text: `${relevant ? "Relevant" : "Not relevant"}: ${label}` }));
    b.addEventListener("click", () => toggle(result, relevant, label));
    return b;
  };
  const group = make("div", { className: "marks", role: "group", "aria-label": `Mark ${label}` },
    button(true), button(false), make("span", { className: "mark-label", "aria-hidden": "true" }));
  paintGroup(group, state.marks.get(result.id));
  return group;
}

function paintGroup(group, mark) {
  for (const b of group.querySelectorAll("button.mark")) {
    const pressed = Boolean(mark) && String(mark.relevant) === b.dataset.relevant;
    b.setAttribute("aria-pressed", String(pressed));
  }
  // In words too (not colour alone); screen readers hear the pressed state of the buttons.
  group.querySelector(".mark-label").textContent = !mark ? "" : mark.relevant ? "Relevant" : "Not relevant";
  const card = group.closest(".card");
  if (card) {
    card.classList.toggle("marked-relevant", Boolean(mark?.relevant));
    card.classList.toggle("marked-not", Boolean(mark) && !mark.relevant);
  }
}

function paintCards(id) {
  for (const card of document.querySelectorAll("#results .card")) {
    if (card.dataset.id !== id) continue;
    const group = card.querySelector(".marks");
    if (group) paintGroup(group, state.marks.get(id));
  }
}

function toggle(result, relevant, label) {
  const id = result.id;
  const current = state.marks.get(id);
  if (current && current.relevant === relevant) {
    unmark(id);
    return;
  }
  const taken = counts()[relevant ? "positive" : "negative"];
  if (taken >= MAX_EACH) {
    el.note.textContent = `At most ${MAX_EACH} results can be marked ${relevant ? "relevant" : "not relevant"} at once: undo one first.`;
    return;
  }
  // Switched: the server's copy of the old mark goes first (it may answer a mark of the same
  // result and query with the same id, so a late DELETE must not take the new one with it).
  const gone = current ? unmark(id, { keepCards: true }) : Promise.resolve();
  const mark = { result, label, relevant, queryRef: state.queryRef, feedbackId: null, saving: null, thumbUrl: null };
  state.marks.set(id, mark);
  save(id, mark, gone);
  paintCards(id);
  renderStrip();
}

/** Forgets a mark; resolves once the server's copy (if any) is deleted. Never rejects. */
function unmark(id, { keepCards = false } = {}) {
  const mark = state.marks.get(id);
  if (!mark) return Promise.resolve();
  state.marks.delete(id);
  if (mark.thumbUrl) URL.revokeObjectURL(mark.thumbUrl);
  if (!keepCards) {
    paintCards(id);
    renderStrip();
  }
  // Still being saved: save() deletes it when the server answers (the mark is gone by then).
  const done = mark.feedbackId ? deleteMark(mark.feedbackId).catch(failed) : mark.saving || Promise.resolve();
  state.saves.set(id, done);  // a new mark of this result is stored after it
  return done;
}

/** Stores a mark on the server, after `before` (the old mark's deletion) settles. Never rejects. */
function save(id, mark, before = Promise.resolve()) {
  if (state.feedback !== "on" || !mark.queryRef) return;
  // After the result's earlier saves too (pressed, undone and pressed again quickly): one at a time.
  const earlier = Promise.all([before, state.saves.get(id)]);
  mark.saving = earlier.then(() => saveMark({ queryRef: mark.queryRef, result: id, relevant: mark.relevant }))
    .then((saved) => {
      mark.feedbackId = saved?.id || null;
      if (state.marks.get(id) !== mark && mark.feedbackId) return deleteMark(mark.feedbackId).catch(failed);
      return undefined;
    }, failed);
  state.saves.set(id, mark.saving);
}

/**
 * A mark the server did not keep: said once, quietly; marks go on working in the page. A
 * server without feedback is not asked again; another failure (a web result the gallery has
 * not stored yet is a 404) leaves later marks to be tried.
 */
function failed(err) {
  const off = err instanceof PlainError && err.code === "feedback_off";
  if (off) state.feedback = "off";
  if (state.noted) return;
  state.noted = true;
  el.note.textContent = off
    ? "This server does not keep marks (feedback is off): they refine this search only."
    : `A mark could not be saved on the server (${err?.message || err}); marks still refine this search.`;
}

function stripItem(id, mark) {
  const img = make("img", { alt: "", loading: "lazy", decoding: "async" });
  // A picture gone from its site (the card shows its placeholder): the words say which mark it is.
  img.addEventListener("error", () => img.replaceWith(make("span", { className: "marked-missing", text: "Image unavailable" })));
  const src = mark.result.thumbnail_url ? `${mark.result.thumbnail_url}?size=${THUMB_SIZE}` : null;
  if (src && !usingKey()) img.src = src;
  else if (src && !mark.thumbUrl) {
    imageUrl(src).then((url) => {
      if (state.marks.get(id) !== mark) return URL.revokeObjectURL(url);
      mark.thumbUrl = url;
      img.src = url;
    }, () => { img.hidden = true; });
  } else if (mark.thumbUrl) img.src = mark.thumbUrl;
  else img.hidden = true;  // no thumbnail: the word and the undo say enough
  const undo = make("button", { type: "button", className: "undo-mark" },
    "Undo", make("span", { className: "visually-hidden", text: ` the mark on ${mark.label}` }));
  undo.addEventListener("click", () => {
    const next = undo.closest("li")?.nextElementSibling?.querySelector("button") || el.refine;
    unmark(id);
    (next.disabled ? el.panel.querySelector("h3") : next)?.focus?.();
  });
  return make("li", { className: `marked-item ${mark.relevant ? "is-relevant" : "is-not"}`, dataset: { id } },
    make("div", { className: "marked-thumb" }, img),
    make("span", { className: "marked-word", text: mark.relevant ? "Relevant" : "Not relevant" }),
    make("span", { className: "visually-hidden", text: `: ${mark.label}` }),
    undo);
}

function renderStrip() {
  el.marked.replaceChildren(...[...state.marks].map(([id, mark]) => stripItem(id, mark)));
  const { positive, negative } = counts();
  el.refine.disabled = state.busy || state.marks.size === 0;
  el.count.textContent = state.marks.size ? `${positive} relevant, ${negative} not relevant` : "";
  el.clear.hidden = state.marks.size === 0;
  el.panel.classList.toggle("has-marks", state.marks.size > 0);
}

/** Shows the panel when results can be marked (they have ids) or marks are kept. */
export function showMarksPanel(markable) {
  el.panel.hidden = !markable && state.marks.size === 0;
}

/** The reply's query_ref: marks made on its results are stored with it. */
export function setQueryRef(ref) {
  state.queryRef = ref || null;
}

/** A new query (not a refinement): its marks start afresh (the server keeps what it stored). */
export function clearMarks() {
  for (const mark of state.marks.values()) if (mark.thumbUrl) URL.revokeObjectURL(mark.thumbUrl);
  state.marks.clear();
  state.queryRef = null;
  renderStrip();
  el.panel.hidden = true;
}

export function setMarksBusy(on) {
  state.busy = on;
  renderStrip();
}

export function initMarks(onRefine) {
  state.onRefine = onRefine;
  el.refine.addEventListener("click", () => {
    if (!state.busy && state.marks.size) state.onRefine(markedIds());
  });
  el.clear.addEventListener("click", () => {
    for (const id of [...state.marks.keys()]) unmark(id);
    el.refine.focus();
  });
  renderStrip();
}
