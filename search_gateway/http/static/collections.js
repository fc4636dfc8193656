// "Your collections": the caller's private collections (list, create, delete with a
// confirm step), pictures dropped or picked (files or a whole folder) and sent in batches
// with a progress bar and per-file results, the collection's pictures as a grid a page at
// a time ("Show more") with a remove button each; and the search form's collection picker.
import {
  PlainError, createCollection, deleteCollection, deleteImage, imageUrl, listCollections, listImages, uploadImages, usingKey,
} from "./api.js";
import { make, showError } from "./dom.js";

// One request carries at most this many files and bytes: well under the gateway's
// defaults (GATEWAY_COLLECTION_MAX_FILES, _MAX_BYTES), so progress moves in small steps;
// a smaller server limit is met by halving the batch on its 413.
const BATCH_FILES = 10;
const BATCH_BYTES = 16 * 1024 * 1024;
const THUMB_SIZE = 320;
const WEB = "web";

const $ = (id) => document.getElementById(id);
const el = {
  views: $("views"), viewSearch: $("view-search"), viewCollections: $("view-collections"),
  searchView: $("search-view"), collectionsView: $("collections-view"), listHeading: $("collections-heading"),
  createForm: $("create-form"), newName: $("new-name"), listError: $("collections-error"), listStatus: $("collections-status"),
  list: $("collection-list"), panel: $("collection-panel"), heading: $("collection-heading"),
  deleteButton: $("delete-collection"), confirm: $("confirm-delete"), confirmText: $("confirm-text"),
  confirmYes: $("confirm-yes"), confirmNo: $("confirm-no"), zone: $("upload-zone"), files: $("upload-files"),
  folder: $("upload-folder"), progress: $("upload-progress"), bar: $("upload-bar"), uploadStatus: $("upload-status"),
  uploadCancel: $("upload-cancel"), rejectedBox: $("rejected-box"), rejectedCount: $("rejected-count"),
  rejected: $("rejected"), error: $("collection-error"), imagesSummary: $("images-summary"), images: $("images"),
  more: $("images-more"),
  pickerField: $("collections-field"), picker: $("collections-picker"),
};

const state = {
  collections: [],       // GET /collections: {name, images, shared?}
  open: null,            // the name of the collection shown
  listing: 0,            // bumped by each new listing of the grid: a page answering for an older one is dropped
  next: null,            // the cursor of the grid's next page (null: every page shown)
  total: 0,              // the pictures in the collection shown, by its last answer
  upload: null,          // AbortController of the running upload
  thumbUrls: [],         // blob: URLs of thumbnails fetched with the API key
  picker: false,         // whether the search takes `collections` (its OpenAPI description says)
  unticked: new Set(),   // names the person unticked in the picker (kept across reloads of the list)
  gallerySearched: true, // whether the search form's sources include the gallery (the picker is for it)
};

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// ---------- views: search or collections

function showView(collections) {
  el.searchView.hidden = collections;
  el.collectionsView.hidden = !collections;
  for (const [button, on] of [[el.viewSearch, !collections], [el.viewCollections, collections]]) {
    if (on) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
}

el.viewSearch.addEventListener("click", () => showView(false));
el.viewCollections.addEventListener("click", () => {
  showView(true);
  el.listHeading.focus();
  refreshList();
});

/**
 * Called once the page knows what the gateway offers: the view needs the gallery (no
 * gallery, no collections: the view stays hidden); the picker needs the search's
 * `collections` parameter.
 */
export async function offerCollections({ gallery, picker }) {
  state.picker = picker;
  if (!gallery) return;
  try {
    await refreshList({ quiet: true });
  } catch {
    return;  // GET /collections refused (gallery off, not found): no view to offer
  }
  el.views.hidden = false;
}

/** Reloads the list (and the picker); with `quiet`, a failure is thrown instead of shown. */
async function refreshList({ quiet = false } = {}) {
  let all;
  try {
    all = await listCollections();
  } catch (err) {
    if (quiet) throw err;
    showError(el.listError, err);
    return;
  }
  showError(el.listError, null);
  state.collections = all.filter((c) => !c.shared && c.name !== WEB);
  renderList();
  renderPicker(all);
  if (state.open && !state.collections.some((c) => c.name === state.open)) closeCollection();
}

function renderList() {
  el.list.replaceChildren(...state.collections.map((c) => {
    const button = make("button", { type: "button", className: "collection-button",
      "aria-current": c.name === state.open ? "true" : null, dataset: { name: c.name } },
    make("span", { className: "collection-name", text: c.name }),
    make("span", { className: "collection-count", text: plural(c.images ?? 0, "image") }));
    button.addEventListener("click", () => openCollection(c.name));
    return make("li", {}, button);
  }));
  if (!state.collections.length) {
    el.list.append(make("li", { className: "hint", text: "No collections yet: create one above, then drop pictures into it." }));
  }
}

// ---------- create and delete

el.createForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = el.newName.value.trim();
  showError(el.listError, null);
  if (!name) {
    showError(el.listError, new PlainError("Type a name for the new collection, e.g. flash-2024."));
    el.newName.focus();
    return;
  }
  try {
    await createCollection(name);
  } catch (err) {
    showError(el.listError, err.status === 400 ? new PlainError(`That name cannot be used. ${err.message}`) : err);
    el.newName.focus();
    return;
  }
  el.newName.value = "";
  await refreshList();
  el.listStatus.textContent = `Created “${name}”. Drop pictures into it below.`;
  openCollection(name);
});

el.deleteButton.addEventListener("click", () => {
  const open = state.collections.find((c) => c.name === state.open);
  const count = open?.images ?? 0;
  el.confirmText.textContent = `Delete “${state.open}” and its ${plural(count, "image")}? This cannot be undone.`;
  el.confirm.hidden = false;
  el.confirmNo.focus();  // the safe choice has the focus
});
el.confirmNo.addEventListener("click", () => {
  el.confirm.hidden = true;
  el.deleteButton.focus();
});
el.confirmYes.addEventListener("click", async () => {
  const name = state.open;
  el.confirmYes.disabled = true;
  try {
    state.upload?.abort();
    await deleteCollection(name);
  } catch (err) {
    showError(el.error, err);
    return;
  } finally {
    el.confirmYes.disabled = false;
  }
  closeCollection();
  await refreshList();
  el.listStatus.textContent = `Deleted “${name}”.`;
  el.listHeading.focus();
});

// ---------- one collection: its pictures

function closeCollection() {
  state.upload?.abort();
  state.open = null;
  state.listing += 1;
  el.panel.hidden = true;
  releaseThumbnails();
  el.images.replaceChildren();
  renderList();
}

async function openCollection(name) {
  if (state.open !== name) {
    state.upload?.abort();
    el.progress.hidden = true;
  }
  state.open = name;
  el.heading.textContent = name;
  el.confirm.hidden = true;
  el.panel.hidden = false;
  showError(el.error, null);
  renderList();
  el.heading.focus();
  await loadImages();
}

/** The grid's page size: `data-page-size` on the grid (the server's default without it). */
const pageSize = () => Number.parseInt(el.images.dataset.pageSize, 10) || undefined;

/** Shows the open collection's first page, in place of whatever the grid held. */
async function loadImages() {
  const name = state.open;
  const listing = ++state.listing;
  state.next = null;  // no "Show more" from the old listing's cursor meanwhile
  el.more.hidden = true;
  let answer;
  try {
    answer = await listImages(name, { limit: pageSize() });
  } catch (err) {
    if (listing === state.listing) showError(el.error, err);
    return;
  }
  if (listing !== state.listing) return;  // another collection opened, or a newer listing, meanwhile
  releaseThumbnails();
  el.images.replaceChildren();
  appendPage(name, answer);
}

/** Appends the next page (the button is disabled meanwhile: one click, one page). */
async function loadMore() {
  const name = state.open;
  const listing = state.listing;
  if (!state.next || el.more.disabled) return;
  el.more.disabled = true;
  let answer;
  try {
    answer = await listImages(name, { limit: pageSize(), cursor: state.next });
  } catch (err) {
    if (listing === state.listing) showError(el.error, err);
    return;
  } finally {
    el.more.disabled = false;
  }
  if (listing !== state.listing) return;  // the grid was listed again (an upload, another collection)
  const added = appendPage(name, answer);
  // The button may be gone (the last page): focus goes to the first new picture, not to the page's start.
  if (el.more.hidden || document.activeElement === el.more) added[0]?.querySelector(".remove-image").focus();
}

/** Adds a page's pictures (any already in the grid skipped) and the state of the pages; returns the new cards. */
function appendPage(name, answer) {
  const shown = new Set([...el.images.children].map((card) => card.dataset.id));
  const cards = (answer.images || []).filter((image) => !shown.has(image.id)).map((image) => imageCard(name, image));
  el.images.append(...cards);
  state.next = answer.next || null;
  el.more.hidden = !state.next;
  summarize(answer.total ?? el.images.children.length);
  return cards;
}

el.more.addEventListener("click", loadMore);

function summarize(total) {
  state.total = total;
  const shown = el.images.children.length;
  el.imagesSummary.textContent = !total
    ? "No pictures yet."
    : `${plural(total, "picture")}` + (shown < total ? ` (${shown} shown)` : "") + ".";
  const listed = state.collections.find((c) => c.name === state.open);
  if (listed) listed.images = total;
  for (const button of el.list.querySelectorAll(".collection-button")) {
    if (button.dataset.name === state.open) button.querySelector(".collection-count").textContent = plural(total, "image");
  }
}

function imageCard(name, image) {
  const label = image.filename || "picture";
  const remove = make("button", { type: "button", className: "remove-image" },
    "Remove", make("span", { className: "visually-hidden", text: ` ${label}` }));
  const item = make("li", { className: "card image-card", dataset: { id: image.id } },
    thumbnail(image, label),
    make("div", { className: "card-body" }, make("p", { className: "card-title", text: label }),
      make("div", { className: "card-actions" }, remove)));
  remove.addEventListener("click", async () => {
    remove.disabled = true;
    try {
      await deleteImage(name, image.id);
    } catch (err) {
      remove.disabled = false;
      showError(el.error, err);
      return;
    }
    // Focus moves to the next picture's button (or the previous, or the heading): not lost with the card.
    const next = item.nextElementSibling || item.previousElementSibling;
    item.remove();
    (next?.querySelector(".remove-image") || el.heading).focus();
    if (state.open !== name) return;
    summarize(Math.max(0, state.total - 1));
    if (!el.images.children.length && state.next) loadMore();  // the shown ones all removed: not an empty grid
  });
  return item;
}

function thumbnail(image, label) {
  const holder = make("div", { className: "thumb" });
  const img = make("img", { alt: label, loading: "lazy", decoding: "async" });
  img.addEventListener("error", () => holder.replaceChildren(make("p", { className: "placeholder", text: "No preview" })));
  const src = `${image.thumbnail}?size=${THUMB_SIZE}`;
  if (!usingKey()) img.src = src;
  else {
    // The key goes in a header, never into the link: fetched, then shown from a blob: URL.
    imageUrl(src).then((url) => {
      state.thumbUrls.push(url);
      img.src = url;
    }, () => img.dispatchEvent(new Event("error")));
  }
  holder.append(img);
  return holder;
}

function releaseThumbnails() {
  for (const url of state.thumbUrls) URL.revokeObjectURL(url);
  state.thumbUrls = [];
}

// ---------- uploads: drop, pick files or a folder; batches with a progress bar

/**
 * The files of a drop, folders walked (a dropped folder has no files in `dataTransfer.files`).
 * Taken at once: the DataTransfer is emptied once the drop handler returns.
 */
function droppedFiles(dataTransfer) {
  const items = [...(dataTransfer.items || [])].filter((item) => item.kind === "file");
  if (!items.length) return Promise.resolve([...dataTransfer.files]);
  // A folder is reachable only as an entry; an item without one (Chromium gives none to the
  // files of a DataTransfer built by a script) is a plain file, taken as it is.
  const picked = items.map((item) => item.webkitGetAsEntry?.() || item.getAsFile()).filter(Boolean);
  return Promise.all(picked.map((p) => (p instanceof File ? [p] : entryFiles(p)))).then((lists) => lists.flat());
}

/** The files under a dropped entry, each with its path in the drop (as a picked folder's webkitRelativePath). */
async function entryFiles(entry) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    file.relativePath = entry.fullPath.replace(/^\/+/, "");
    return [file];
  }
  const reader = entry.createReader();
  const files = [];
  for (;;) {  // readEntries answers in chunks (100 in Chromium) until an empty one
    const chunk = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!chunk.length) return files;
    for (const child of chunk) files.push(...await entryFiles(child));
  }
}

/** The file's path within a dropped or picked folder, else its name. */
const fileLabel = (file) => file.relativePath || file.webkitRelativePath || file.name;

/** A hidden file, or one in a hidden folder (.DS_Store, ._ resource forks, .git/): not a picture anyone meant to add. */
const hidden = (file) => fileLabel(file).split("/").some((part) => part.startsWith("."));

function* batches(files) {
  let batch = [];
  let bytes = 0;
  for (const file of files) {
    if (batch.length && (batch.length >= BATCH_FILES || bytes + file.size > BATCH_BYTES)) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(file);
    bytes += file.size;
  }
  if (batch.length) yield batch;
}

function tallyText(t) {
  return `${t.done} of ${plural(t.total, "file")} sent · ${t.added} added · ${plural(t.duplicate, "duplicate")} · ` +
    `${t.rejected} not added` + (t.hidden ? ` · ${plural(t.hidden, "hidden file")} skipped` : "");
}

async function upload(picked) {
  const files = picked.filter((f) => !hidden(f));
  const name = state.open;
  if (!name) return;
  if (!files.length) {
    showError(el.error, new PlainError("No files to add there. Drop pictures, or a folder with pictures in it."));
    return;
  }
  if (state.upload) {
    showError(el.error, new PlainError("Pictures are still being added. Wait until they are done (or stop them)."));
    return;
  }
  const controller = new AbortController();
  state.upload = controller;
  const tally = { done: 0, total: files.length, added: 0, duplicate: 0, rejected: 0, hidden: picked.length - files.length };
  showError(el.error, null);
  el.rejected.replaceChildren();
  el.rejectedBox.hidden = true;
  el.progress.hidden = false;
  el.uploadCancel.hidden = false;
  el.bar.max = files.length;
  el.bar.value = 0;
  el.uploadStatus.textContent = tallyText(tally);
  const record = (results, batch) => {
    results.forEach((result, i) => {
      const status = result.status === "added" || result.status === "duplicate" ? result.status : "rejected";
      tally[status] += 1;
      if (status === "rejected") {
        const label = (batch[i] && fileLabel(batch[i])) || result.input || "file";
        el.rejected.append(make("li", {}, make("span", { className: "rejected-name", text: label }),
          `: ${result.reason || "not added"}`));
      }
    });
    tally.done += batch.length;
    el.bar.value = tally.done;
    el.rejectedBox.hidden = tally.rejected === 0;
    el.rejectedCount.textContent = plural(tally.rejected, "file");
    el.uploadStatus.textContent = tallyText(tally);
  };
  const send = async (batch) => {
    try {
      record(await uploadImages(name, batch, controller.signal), batch);
    } catch (err) {
      if (err.status !== 413) throw err;
      if (batch.length === 1) {  // one file over the whole request's limit
        record([{ status: "rejected", reason: err.detail || "Too large for this server." }], batch);
        return;
      }
      const half = Math.ceil(batch.length / 2);
      await send(batch.slice(0, half));
      await send(batch.slice(half));
    }
  };
  try {
    for (const batch of batches(files)) await send(batch);
    el.uploadStatus.textContent = `Done: ${tallyText(tally)}.`;
  } catch (err) {
    el.uploadStatus.textContent = `Stopped: ${tallyText(tally)}.`;
    if (err.name !== "AbortError") showError(el.error, err);
  } finally {
    if (state.upload === controller) state.upload = null;
    el.uploadCancel.hidden = true;
    if (state.open === name) await loadImages();
  }
}

el.uploadCancel.addEventListener("click", () => state.upload?.abort());
for (const input of [el.files, el.folder]) {
  input.addEventListener("change", () => {
    const files = [...input.files];
    input.value = "";  // the same files may be picked again
    upload(files);
  });
}
for (const type of ["dragenter", "dragover"]) {
  el.zone.addEventListener(type, (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    el.zone.classList.add("dragging");
  });
}
el.zone.addEventListener("dragleave", (event) => {
  if (!el.zone.contains(event.relatedTarget)) el.zone.classList.remove("dragging");
});
el.zone.addEventListener("drop", (event) => {
  event.preventDefault();
  el.zone.classList.remove("dragging");
  droppedFiles(event.dataTransfer).then(upload, (err) => showError(el.error, err));
});

// ---------- the search form's picker

function renderPicker(all) {
  const names = all.map((c) => c.name);
  el.picker.replaceChildren(...names.map((name, i) => make("span", { className: "chip" },
    make("input", { type: "checkbox", id: `collection-${i}`, value: name, checked: !state.unticked.has(name) }),
    make("label", { for: `collection-${i}`, text: name }))));
  showPicker(state.gallerySearched);
}

el.picker.addEventListener("change", (event) => {
  const input = event.target;
  if (input.checked) state.unticked.delete(input.value);
  else state.unticked.add(input.value);
});

/** Shown when the search takes `collections`, there is more than `web` to pick, and the gallery is searched. */
export function showPicker(gallerySearched) {
  state.gallerySearched = gallerySearched;
  el.pickerField.hidden = !(state.picker && gallerySearched && el.picker.children.length > 1);
}

/**
 * The collections ticked, or null for the server's default (all ticked, or the picker
 * hidden): the default also covers a collection created after the list was loaded.
 */
export function pickedCollections() {
  if (el.pickerField.hidden) return null;
  const inputs = [...el.picker.querySelectorAll("input")];
  const ticked = inputs.filter((i) => i.checked).map((i) => i.value);
  return ticked.length === inputs.length ? null : ticked;
}
