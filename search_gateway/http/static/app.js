// The search page: picking the query, the streaming search with its progress bar,
// the results grid (gallery results at once, web results merged in), "more like this",
// the marks and Refine (marks.js), the colour / placement filters (filters.js) and the
// attention view. No framework; the DOM is built with
// textContent and attributes only (never innerHTML with data from the network).
import { PlainError, analyzeAttention, imageUrl, listModels, searchOptions, streamSearch, usingKey } from "./api.js";
import { offerCollections, pickedCollections, showPicker } from "./collections.js";
import { make, showError } from "./dom.js";
import { looks, offerFilters, selectedFilters } from "./filters.js";
import { clearMarks, initMarks, markButtons, setMarksBusy, setQueryRef, showMarksPanel } from "./marks.js";

const $ = (id) => document.getElementById(id);
const el = {
  form: $("search-form"), file: $("file"), camera: $("camera"), dropZone: $("drop-zone"), preview: $("preview"),
  previewImg: $("preview-img"), previewName: $("preview-name"), previewLike: $("preview-like"), clearFile: $("clear-file"),
  text: $("text"), model: $("model"), modelInfo: $("model-info"), reloadModels: $("reload-models"),
  maxResults: $("max-results"), attention: $("attention"), search: $("search"), cancel: $("cancel"),
  sourcesField: $("sources-field"), tagsField: $("tags-field"), tags: $("tags"), tagsCount: $("tags-count"),
  progressPanel: $("progress-panel"), progress: $("progress"), caption: $("caption"), counts: $("counts"),
  error: $("error"), resultsPanel: $("results-panel"), resultsHeading: $("results-heading"),
  resultsSummary: $("results-summary"), results: $("results"), emptyHint: $("empty-hint"),
  dialog: $("analysis"), dialogClose: $("analysis-close"), analysisStatus: $("analysis-status"),
  analysisError: $("analysis-error"), analysisBody: $("analysis-body"), analysisSummary: $("analysis-summary"),
  analysisSentence: $("analysis-sentence"), heatmap: $("analysis-heatmap"), lines: $("analysis-lines"),
};

const STATE_WORDS = { ready: "loaded", not_loaded: "loads on first use", loading: "loading", failed: "failed to load", unspecified: "state unknown" };
const THUMB_SIZE = 320;
const IMAGE_RETRY_MS = 1500;
const MAX_TAGS = 8;
const GALLERY_DOWN = "The gallery is unavailable; showing web results only.";

const state = {
  file: null,            // the picked File
  like: null,            // {id, title, thumbnailUrl} of a gallery result: "more like this" (instead of the file)
  previewUrl: null,      // its blob: URL, revoked when replaced
  models: [],            // GET /models answer
  search: null,          // AbortController of the running search
  last: null,            // {file, model} of the search whose results are shown (for Analyze)
  request: null,         // what the last search (not a refinement) asked: Refine asks it again, with the marks
  analysis: null,        // AbortController of the running analysis
  analyzeButton: null,   // where focus returns when the analysis closes
  modelPicked: false,    // the person chose a model: reloading the list keeps it
  thumbUrls: [],         // blob: URLs of thumbnails fetched with the API key, revoked with their results
  thumbs: new Map(),     // gallery id -> thumbnail element shown, so the final list reuses the gallery's cards
  gallery: null,         // whether the gateway has a gallery: null until its OpenAPI description says
};

// ---------- small helpers

const percent = (x, digits = 1) => `${(Number(x) * 100).toFixed(digits)}%`;

/** Only http(s) links from results are followed; anything else (javascript:, data:) is dropped. */
function safeHttpUrl(raw) {
  try {
    const url = new URL(raw, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

// ---------- the query image

function setFile(file) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.file = file || null;
  state.like = null;  // a picked file replaces "more like this" (and "Remove image" removes either)
  state.previewUrl = null;
  el.previewLike.hidden = true;
  el.previewImg.alt = "The image you picked";
  showError(el.error, null);
  if (!file) {
    el.file.value = "";
    el.camera.value = "";
    el.preview.hidden = true;
    el.clearFile.hidden = true;
    el.previewImg.removeAttribute("src");
    el.dropZone.classList.remove("has-file");
    return;
  }
  state.previewUrl = URL.createObjectURL(file);
  el.previewImg.hidden = false;
  el.previewImg.src = state.previewUrl;
  el.previewName.textContent = file.name || "Pasted image";
  el.preview.hidden = false;
  el.clearFile.hidden = false;
  el.dropZone.classList.add("has-file");
}

/** "More like this": the gallery picture becomes the query, shown as "Like: <thumbnail>". */
function setLike(result, index) {
  setFile(null);
  const title = result.title || `result ${index + 1}`;
  state.like = { id: result.id, title, thumbnailUrl: result.thumbnail_url || "" };
  el.previewLike.hidden = false;
  el.previewImg.hidden = false;
  el.previewImg.alt = `More like: ${title}`;
  el.previewName.textContent = title;
  el.preview.hidden = false;
  el.clearFile.hidden = false;
  el.dropZone.classList.add("has-file");
  if (!state.like.thumbnailUrl) {
    el.previewImg.hidden = true;
    return;
  }
  const src = `${state.like.thumbnailUrl}?size=${THUMB_SIZE}`;
  if (!usingKey()) {
    el.previewImg.src = src;
    return;
  }
  const like = state.like;
  imageUrl(src).then((blobUrl) => {
    if (state.like !== like) return URL.revokeObjectURL(blobUrl);  // replaced meanwhile
    state.previewUrl = blobUrl;
    el.previewImg.src = blobUrl;
  }, () => { el.previewImg.hidden = true; });
}

el.previewImg.addEventListener("error", () => {
  if (state.like) {
    el.previewImg.hidden = true;  // the caption still names the picture
    return;
  }
  // Not something the browser can show (maybe not an image at all): the server will say.
  if (!state.file) return;
  el.previewImg.hidden = true;
  el.previewName.textContent = `${state.file.name || "This file"} (no preview)`;
});

el.file.addEventListener("change", () => setFile(el.file.files[0]));
el.camera.addEventListener("change", () => setFile(el.camera.files[0]));
el.clearFile.addEventListener("click", () => {
  setFile(null);
  el.file.focus();
});

for (const type of ["dragenter", "dragover"]) {
  el.dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    el.dropZone.classList.add("dragging");
  });
}
el.dropZone.addEventListener("dragleave", (event) => {
  if (!el.dropZone.contains(event.relatedTarget)) el.dropZone.classList.remove("dragging");
});
el.dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  el.dropZone.classList.remove("dragging");
  const files = event.dataTransfer.files;
  if (!files.length) return;
  try {
    el.file.files = files;  // keep the input in step with what is shown
  } catch {
    // Old browsers cannot set input.files; state.file is what is sent anyway.
  }
  setFile(files[0]);
});
document.addEventListener("paste", (event) => {
  const item = [...(event.clipboardData?.items || [])].find((i) => i.kind === "file" && i.type.startsWith("image/"));
  if (item) setFile(item.getAsFile());
});

// ---------- models

function selectedModel() {
  return state.models.find((m) => m.name === el.model.value) || null;
}

function describeModel() {
  const model = selectedModel();
  el.modelInfo.replaceChildren();
  if (!model) return;
  const stateWord = STATE_WORDS[model.state] || model.state;
  el.modelInfo.append(make("span", { className: `badge state-${model.state}`, text: stateWord }));
  if (model.supports_text) el.modelInfo.append(make("span", { className: "badge", text: "text" }));
  if (model.weights === "random") {
    el.modelInfo.append(make("span", { className: "badge warning", text: "random weights" }),
      make("span", { className: "hint", text: "A demo model: its scores do not measure similarity." }));
  }
  if (model.error) el.modelInfo.append(make("span", { className: "hint", text: model.error }));
}

// Until the person picks one: the default model, unless it runs with random weights and
// another has real ones (a first search then ranks by similarity, not by chance).
function preselected(defaultName) {
  const byName = (name) => state.models.find((m) => m.name === name);
  const fallback = byName(defaultName);
  if (!fallback || fallback.weights !== "random") return defaultName;
  const real = state.models.find((m) => m.weights !== "random" && m.state !== "failed");
  return real ? real.name : defaultName;
}

async function loadModels() {
  el.reloadModels.hidden = true;
  el.modelInfo.textContent = "Loading the models…";
  try {
    const answer = await listModels();
    state.models = answer.models || [];
    const keep = el.model.value;
    el.model.replaceChildren(...state.models.map((m) => {
      const bits = [STATE_WORDS[m.state] || m.state];
      if (m.weights === "random") bits.push("random weights");
      if (m.supports_text) bits.push("text");
      return make("option", { value: m.name, text: `${m.name} (${bits.join(", ")})` });
    }));
    const wanted = state.modelPicked && state.models.some((m) => m.name === keep) ? keep : preselected(answer.default_model);
    if (state.models.some((m) => m.name === wanted)) el.model.value = wanted;
    describeModel();
  } catch (err) {
    el.modelInfo.textContent = "";
    el.modelInfo.append(make("span", { className: "badge warning", text: "models unknown" }),
      make("span", { className: "hint", text: ` ${err.message || err}` }));
    el.reloadModels.hidden = false;
  }
}

el.model.addEventListener("change", () => {
  state.modelPicked = true;
  describeModel();
});
el.reloadModels.addEventListener("click", loadModels);

// ---------- where to search: the gallery, the web or both; gallery tags

function selectedSources() {
  if (el.sourcesField.hidden) return "";  // no gallery (or not known yet): the gateway's default
  return el.form.querySelector('input[name="sources"]:checked')?.value || "";
}

const includesGallery = (sources) => sources === "" ? state.gallery !== false : sources.split(",").includes("gallery");
const includesWeb = (sources) => sources === "" || sources.split(",").includes("web");

function selectedTags() {
  if (el.tagsField.hidden) return [];
  return [...el.tags.querySelectorAll("input:checked")].map((input) => input.value);
}

function updateTagsField() {
  el.tagsField.hidden = el.sourcesField.hidden || !el.tags.children.length || !includesGallery(selectedSources());
  showPicker(!el.sourcesField.hidden && includesGallery(selectedSources()));
  const picked = selectedTags().length;
  el.tagsCount.textContent = picked ? `(${picked} picked)` : "";
  // At most 8: the rest wait until one is unticked.
  for (const input of el.tags.querySelectorAll("input")) input.disabled = !input.checked && picked >= MAX_TAGS;
}

/** Shows or hides the gallery's controls: hidden when the gateway runs with the gallery off. */
function offerGallery(offered, tags = []) {
  state.gallery = offered;
  el.form.dataset.gallery = offered === null ? "unknown" : offered ? "on" : "off";
  el.sourcesField.hidden = offered === false;
  if (tags.length && !el.tags.children.length) {
    el.tags.replaceChildren(...tags.map((tag, i) => make("span", { className: "chip" },
      make("input", { type: "checkbox", id: `tag-${i}`, value: tag }),
      make("label", { for: `tag-${i}`, text: tag }))));
  }
  updateTagsField();
}

async function loadSearchOptions() {
  const options = await searchOptions();
  // Unknown (the description could not be read): offer it; a search's 400 says otherwise.
  offerGallery(options ? options.gallery : null, options?.tags || []);
  offerFilters(options);
  // The collections view needs the gallery; the search's picker needs its `collections` parameter too.
  await offerCollections({ gallery: options?.gallery !== false, picker: Boolean(options?.collections) });
  updateTagsField();
}

el.sourcesField.addEventListener("change", updateTagsField);
el.tags.addEventListener("change", updateTagsField);

// ---------- the search and its progress

function setSearching(on) {
  setMarksBusy(on);
  el.search.disabled = on;
  el.cancel.disabled = !on;
  el.resultsPanel.setAttribute("aria-busy", on ? "true" : "false");
  el.search.textContent = on ? "Searching…" : "Search";
}

function progressTracker(onGallery) {
  const p = { caption: false, found: 0, downloaded: 0, failed: 0, ranked: 0, gallery: null };
  const setValue = (value) => {
    const v = Math.max(Number(el.progress.value) || 0, Math.min(100, Math.round(value)));
    el.progress.value = v;
  };
  const counts = () => {
    const web = `found ${p.found} · downloaded ${p.downloaded}` + (p.failed ? ` (${p.failed} failed)` : "") + ` · ranked ${p.ranked}`;
    el.counts.textContent = p.gallery === null ? web[0].toUpperCase() + web.slice(1) : `${p.gallery} from the gallery · ${web}`;
  };
  return (event) => {
    switch (event.event) {
      case "gallery":
        p.gallery = (event.results || []).length;
        onGallery(event);
        break;
      case "caption":
        p.caption = true;
        el.caption.textContent = `Looking for: ${captionWords(event)}`;
        break;
      case "candidates":
        p.found = event.found;
        break;
      case "downloaded":
        p.downloaded = event.downloaded;
        p.failed = event.failed;
        break;
      case "ranked":
        p.ranked = event.ranked;
        break;
      default:
        return;
    }
    // 10% for the caption, the rest shared by downloads settled and candidates ranked;
    // the total is unknown while candidates keep coming, so the bar never goes back.
    let value = p.caption ? 10 : 3;
    if (p.found > 0) {
      const settled = Math.min(1, (p.downloaded + p.failed) / p.found);
      const ranked = Math.min(1, p.ranked / p.found);
      value = 10 + 85 * (0.5 * settled + 0.5 * ranked);
    }
    setValue(Math.min(95, value));
    counts();
  };
}

/** What the search looked for, as "for …" or "like …" (a gallery-only search has no caption). */
// A caption worded by a text tower with random weights is a guess: say so next to it.
function captionWords(body) {
  return body.caption_source === "offline-random"
    ? `“${body.caption}” (a guess: the caption model runs random weights)` : `“${body.caption}”`;
}

function lookedFor(body, query) {
  if (query.like) return `like “${query.like.title}”` + (body.caption ? ` (on the web: ${captionWords(body)})` : "");
  if (body.caption) return `for ${captionWords(body)}`;
  return query.text && !query.file ? `for “${query.text}”` : "like your image";
}

/** A search error in words that fit what was asked (the gallery alone, a gateway without one). */
function searchError(err, sources) {
  if (!(err instanceof PlainError)) return err;
  if (err.status === 400 && /gallery is off/i.test(`${err.message} ${err.detail}`)) {
    offerGallery(false);  // the description was not readable, or the gateway changed: hide the switch
    return new PlainError("This server has no gallery: search again to look on the web.", { detail: err.detail });
  }
  if (sources === "gallery" && err.status === 503) {
    return new PlainError("The gallery is unavailable right now. Search the web (“Web”) or try again in a moment.",
      { detail: err.detail, status: err.status, code: err.code });
  }
  return err;
}

/** The search the form asks for, checked; null (with the error shown) when it cannot run. */
function formRequest() {
  const text = el.text.value.trim();
  const like = state.like;
  const file = like ? null : state.file;
  const model = el.model.value;
  const maxResults = Number(el.maxResults.value);
  const sources = selectedSources();
  const collections = includesGallery(sources) ? pickedCollections() : null;
  if (collections && !collections.length) {
    showError(el.error, new PlainError("Tick at least one collection to search in (or search the web only)."));
    document.querySelector("#collections-picker input")?.focus();
    return null;
  }
  if (!like && !file && !text) {
    showError(el.error, new PlainError("Pick an image (or type a few words) to search with."));
    el.file.focus();
    return null;
  }
  if (!Number.isInteger(maxResults) || maxResults < 1 || maxResults > 100) {
    showError(el.error, new PlainError("The number of results must be a whole number from 1 to 100."));
    el.maxResults.focus();
    return null;
  }
  const described = selectedModel();
  if (!like && !file && described && !described.supports_text) {
    showError(el.error, new PlainError(`The ${model} model cannot search by text. Pick a model marked “text”, or search with an image.`));
    el.model.focus();
    return null;
  }
  return { file, text, like, model, maxResults, attention: el.attention.checked, sources, tags: selectedTags(),
    collections, ...selectedFilters() };
}

/**
 * Runs the search the form asks for; with `marks` ({positive, negative}: Refine), the last
 * search again (its query, model, sources and filters) steered by them, and the marks kept.
 */
async function runSearch(marks = null) {
  showError(el.error, null);
  let request;
  if (marks) {
    if (!state.request) return;
    request = { ...state.request, ...marks };
  } else {
    request = formRequest();
    if (!request) return;
    state.request = request;
    clearMarks();  // marks belong to the query they were made on
  }
  const { file, text, like, model, sources } = request;

  state.search?.abort();  // "More like this" during a search replaces it
  const controller = new AbortController();
  state.search = controller;
  const query = { file, text, like };
  state.last = { file, model };  // the gallery's cards (shown before the end) may be analyzed too
  setSearching(true);
  el.progressPanel.hidden = false;
  el.progress.value = 0;
  el.caption.textContent = marks ? "Refining with your marks…" : like ? `Looking for designs like “${like.title}”…` : file ? "Reading your image…" : `Looking for: “${text}”`;
  el.counts.textContent = "Starting the search…";
  el.results.replaceChildren();
  releaseThumbnails();
  el.resultsSummary.replaceChildren();
  el.resultsPanel.classList.remove("partial");
  el.emptyHint.hidden = true;

  const onGallery = (event) => {
    if (state.search !== controller) return;
    renderGallery(event, { query, sources, model });
  };
  try {
    const body = await streamSearch({ ...request, like: like?.id }, progressTracker(onGallery), controller.signal);
    if (state.search !== controller) return;
    el.progress.value = 100;
    state.last = { file, model: body.embedding_model || model };
    const s = body.stats || {};
    const ms = body.timings?.total_ms;
    const seconds = !ms ? "" : ms < 1000 ? ` in ${Math.round(ms)} ms` : ` in ${(ms / 1000).toFixed(1)} s`;
    const gallery = includesGallery(sources) && !s.gallery_error ? `${s.from_gallery ?? 0} from the gallery` : "";
    const web = includesWeb(sources)
      ? `found ${s.candidates_found ?? 0} · downloaded ${s.downloaded ?? 0}` + (s.failed ? ` (${s.failed} failed)` : "") +
        ` · ranked ${s.ranked ?? 0}`
      : "";
    const sought = lookedFor(body, query);
    el.caption.textContent = `Looked for: ${sought.startsWith("for ") ? sought.slice(4) : `designs ${sought}`}`;
    el.counts.textContent = `Done${seconds}: ${[gallery, web].filter(Boolean).join(" · ")}`;
    renderResults(body, query);
  } catch (err) {
    if (state.search !== controller) return;  // replaced by a newer search: that one reports
    if (err.name === "AbortError") {
      el.counts.textContent = "Search cancelled.";
      el.emptyHint.hidden = el.results.children.length > 0;
    } else {
      el.counts.textContent = "The search did not finish.";
      showError(el.error, searchError(err, sources));
    }
  } finally {
    if (state.search === controller) {
      state.search = null;
      setSearching(false);
    }
  }
}

el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!state.search) runSearch();
});
initMarks((marks) => {
  if (state.search) return;
  el.resultsHeading.focus();  // the cards (and the button pressed on one) are replaced
  runSearch(marks);
});
el.cancel.addEventListener("click", () => {
  state.search?.abort();
  el.search.focus();
});

// ---------- results

function thumbnail(result, index) {
  const alt = result.title ? `Result ${index + 1}: ${result.title}` : `Result ${index + 1}`;
  const holder = make("div", { className: "thumb" });
  if (!result.thumbnail_url) {
    holder.append(placeholder());
    return holder;
  }
  const src = `${result.thumbnail_url}?size=${THUMB_SIZE}`;
  const img = make("img", { alt, loading: "lazy", decoding: "async" });
  const show = (url) => {
    if (!usingKey()) {
      img.src = url;
      return;
    }
    // An <img> cannot send the API key (and the key must not go into the link): fetch
    // the picture with the key in its header and show it from a blob: URL.
    imageUrl(url).then((blobUrl) => {
      state.thumbUrls.push(blobUrl);
      img.src = blobUrl;
    }, () => img.dispatchEvent(new Event("error")));
  };
  let retried = false;
  img.addEventListener("error", () => {
    if (!retried) {
      // One more try: the site may have been slow, or the rate limit hit by many thumbnails at once.
      retried = true;
      setTimeout(() => show(`${src}&retry=1`), IMAGE_RETRY_MS);
      return;
    }
    holder.replaceChildren(placeholder());
    holder.closest(".card")?.classList.add("broken");
  });
  show(src);
  holder.append(img);
  return holder;
}

function releaseThumbnails() {
  for (const url of state.thumbUrls) URL.revokeObjectURL(url);
  state.thumbUrls = [];
  state.thumbs = new Map();
}

function placeholder() {
  return make("div", { className: "placeholder", role: "img", "aria-label": "Image unavailable" },
    make("span", { className: "placeholder-icon", "aria-hidden": "true" }),
    make("span", { className: "placeholder-text", text: "Image unavailable" }));
}

/** The thumbnail already shown for this picture (its gallery card), relabelled; else a new one. */
function thumbnailFor(result, index) {
  const shown = result.id ? state.thumbs.get(result.id) : null;
  if (shown) {
    const img = shown.querySelector("img");
    if (img) img.alt = result.title ? `Result ${index + 1}: ${result.title}` : `Result ${index + 1}`;
    return shown;
  }
  const holder = thumbnail(result, index);
  if (result.id) state.thumbs.set(result.id, holder);
  return holder;
}

/** Where the result came from, in words (not colour alone): "gallery" or "web". */
function sourceBadge(result) {
  const source = result.source === "gallery" ? "gallery" : "web";
  return make("span", { className: `source-badge source-${source}` },
    make("span", { className: "visually-hidden", text: "From the " }), source);
}

function topTags(result, count = 3) {
  const tags = Object.entries(result.tags || {}).sort((a, b) => b[1] - a[1]).slice(0, count).map(([tag]) => tag);
  return tags.length ? make("p", { className: "tags", text: `Tags: ${tags.join(", ")}` }) : null;
}

function card(result, index, canAnalyze) {
  const title = result.title || `Result ${index + 1}`;
  const source = safeHttpUrl(result.source_url) || safeHttpUrl(result.url);
  const actions = make("div", { className: "card-actions" });
  if (result.source === "gallery" && result.id) {
    const button = make("button", { type: "button", className: "more-like" },
      "More like this", make("span", { className: "visually-hidden", text: ` result ${index + 1}` }));
    button.addEventListener("click", () => moreLikeThis(result, index));
    actions.append(button);
  }
  if (source) {
    actions.append(make("a", { href: source, target: "_blank", rel: "noopener noreferrer", className: "source-link" },
      "Source page", make("span", { className: "visually-hidden", text: ` of result ${index + 1} (opens in a new tab)` })));
  }
  if (canAnalyze) {
    const button = make("button", { type: "button", className: "analyze" },
      "Analyze", make("span", { className: "visually-hidden", text: ` result ${index + 1}` }));
    button.addEventListener("click", () => openAnalysis(result, index, button));
    actions.append(button);
  }
  const pa = result.patch_attention;
  const patches = pa?.attention_summary
    ? make("p", { className: "patches", text: `Patches: ${percent(pa.attention_summary.strong_match_ratio, 0)} strong matches` })
    : null;
  return make("li", { className: `card from-${result.source === "gallery" ? "gallery" : "web"}`,
    dataset: { score: String(result.score), source: result.source || "web", id: result.id || "" } },
    thumbnailFor(result, index),
    make("div", { className: "card-body" },
      make("p", { className: "score" },
        make("span", { className: "score-value", text: percent(result.score) }), " similar"),
      make("p", { className: "meta" },
        sourceBadge(result),
        make("span", { className: "platform", text: result.platform || "web" }),
        make("span", { className: "card-title", text: title })),
      topTags(result),
      looks(result),
      patches,
      markButtons(result, index),
      actions));
}

/** "More like this": the gallery picture is the query, with the model and sources picked now. */
function moreLikeThis(result, index) {
  setLike(result, index);
  el.resultsHeading.focus();  // the button goes with the old results; focus stays where they were
  runSearch();
}

/** The stream's first event: the gallery's results, shown at once while the web is searched. */
function renderGallery(event, { query, sources, model }) {
  const results = event.results || [];
  const notices = [];
  if (event.error && includesWeb(sources)) {
    notices.push(make("p", { className: "notice gallery-notice" },
      make("span", { className: "badge warning", text: "gallery" }), ` ${GALLERY_DOWN}`));
  }
  const more = includesWeb(sources) ? " Looking on the web…" : "";
  notices.unshift(make("p", {
    text: results.length
      ? `${results.length} design${results.length === 1 ? "" : "s"} from the gallery, ranked with ${model}.${more}`
      : `The gallery has nothing like this yet.${more}`,
  }));
  el.resultsSummary.replaceChildren(...notices);
  el.results.replaceChildren(...results.map((r, i) => card(r, i, Boolean(query.file))));
  el.emptyHint.hidden = results.length > 0;
  showMarksPanel(results.some((r) => r.id));
}

function renderResults(body, query) {
  const results = body.results || [];
  const random = body.embedding_weights === "random";
  const canAnalyze = Boolean(state.last?.file);
  const galleryDown = Boolean(body.stats?.gallery_error);
  el.resultsPanel.classList.toggle("partial", Boolean(body.partial));

  const fromGallery = results.filter((r) => r.source === "gallery").length;
  const split = fromGallery && fromGallery < results.length
    ? ` (${fromGallery} from the gallery, ${results.length - fromGallery} from the web)`
    : fromGallery ? " from the gallery" : "";
  const summary = [make("p", {
    text: results.length
      ? `${results.length} design${results.length === 1 ? "" : "s"}${split} ${lookedFor(body, query)}, ranked with ${body.embedding_model}.`
      : `No designs were found ${lookedFor(body, query)}. Try another picture or other words.`,
  })];
  if (galleryDown) {
    summary.push(make("p", { className: "notice gallery-notice" },
      make("span", { className: "badge warning", text: "gallery" }), ` ${GALLERY_DOWN}`));
  } else if (body.partial) {
    summary.push(make("p", { className: "notice partial-notice" },
      make("span", { className: "badge warning", text: "partial" }),
      " The time limit ran out (or a service failed) before every candidate was ranked: these are the best found so far."));
  }
  if (random) {
    summary.push(make("p", { className: "notice" },
      make("span", { className: "badge warning", text: "random weights" }),
      " The model runs with random weights (a demo), so these scores do not measure similarity."));
  }
  if (body.refinement) {
    const r = body.refinement;
    summary.push(make("p", { className: "notice refined-notice" }, make("span", { className: "badge", text: "refined" }),
      ` Steered by your marks: ${r.positive} relevant, ${r.negative} not relevant (${r.method}). Marked results are left out.`));
  }
  // What the server says about this answer (e.g. a model without a text tower places nothing).
  for (const note of Array.isArray(body.notes) ? body.notes : []) {
    summary.push(make("p", { className: "notice server-note" }, make("span", { className: "badge", text: "note" }), ` ${note}`));
  }
  if (!canAnalyze && results.length) {
    summary.push(make("p", { className: "hint",
      text: "Analyze needs an uploaded image; it is not offered for text or “more like this” searches." }));
  }
  el.resultsSummary.replaceChildren(...summary);
  // One card per picture: the gallery's cards already shown keep their thumbnails.
  setQueryRef(body.query_ref);  // before the cards: marks made on them are stored with it
  el.results.replaceChildren(...results.map((r, i) => card(r, i, canAnalyze)));
  el.emptyHint.hidden = results.length > 0;
  showMarksPanel(results.some((r) => r.id));
}

// ---------- the attention view

function summaryRow(term, value) {
  return [make("dt", { text: term }), make("dd", { text: value })];
}

function waitForImage(img, src) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve();
    img.onerror = () => reject(new PlainError("A picture of the analysis could not be shown."));
    img.src = src;
  });
}

async function openAnalysis(result, index, button) {
  state.analysis?.abort();
  const controller = new AbortController();
  state.analysis = controller;
  state.analyzeButton = button;
  el.analysisBody.hidden = true;
  showError(el.analysisError, null);
  el.heatmap.removeAttribute("src");
  el.lines.removeAttribute("src");
  el.analysisStatus.textContent = `Comparing your image with result ${index + 1}…`;
  if (!el.dialog.open) el.dialog.showModal();
  el.dialogClose.focus();
  try {
    const answer = await analyzeAttention(
      { file: state.last.file, candidateUrl: result.url, model: state.last.model }, controller.signal);
    const sim = answer.similarity_analysis || {};
    const grid = (g) => (Array.isArray(g) ? `${g[0]} × ${g[1]}` : "–");
    el.analysisSummary.replaceChildren(
      ...summaryRow("Whole-image similarity", percent(sim.global_similarity)),
      ...summaryRow("Mean over all patch pairs", percent(sim.overall_similarity)),
      ...summaryRow("Average best patch match", percent(sim.mean_max_similarity)),
      ...summaryRow("Patches with a strong match", percent(sim.strong_match_ratio, 0)),
      ...summaryRow("Patch grids (yours, result)", `${grid(answer.query_grid)}, ${grid(answer.candidate_grid)}`),
      ...summaryRow("Model", answer.embedding_model));
    el.analysisSentence.textContent =
      `${percent(sim.strong_match_ratio, 0)} of your image's patches have a strong match in result ${index + 1}; ` +
      `its best-matching patch reaches ${percent(sim.max_similarity, 0)}.`;
    const pictures = answer.visualizations || {};
    el.analysisBody.hidden = false;
    await Promise.all([waitForImage(el.heatmap, pictures.attention_heatmap), waitForImage(el.lines, pictures.top_correspondences)]);
    if (state.analysis === controller) el.analysisStatus.textContent = `Result ${index + 1} compared with your image.`;
  } catch (err) {
    if (err.name === "AbortError") return;
    el.analysisStatus.textContent = "";
    showError(el.analysisError, err);
  } finally {
    if (state.analysis === controller) state.analysis = null;
  }
}

el.dialogClose.addEventListener("click", () => el.dialog.close());
el.dialog.addEventListener("close", () => {
  state.analysis?.abort();
  state.analyzeButton?.focus();
});
// A click on the backdrop (outside the dialog's box) closes it too.
el.dialog.addEventListener("click", (event) => {
  if (event.target === el.dialog) {
    const box = el.dialog.getBoundingClientRect();
    const inside = event.clientX >= box.left && event.clientX <= box.right && event.clientY >= box.top && event.clientY <= box.bottom;
    if (!inside) el.dialog.close();
  }
});

loadModels().then(loadSearchOptions);
