// The colour-scheme chips, the main-colour (palette) picker and the body-placement chips.
// Their choices come from the server's /openapi.json (the `color`, `palette` and
// `placement` parameters of /search), so the page follows the server; a control whose
// parameter the server does not declare stays hidden. Also: a result's colours and
// placement in words, for its card.
import { make } from "./dom.js";

const $ = (id) => document.getElementById(id);
const el = {
  colorField: $("color-field"), colorOptions: $("color-options"),
  paletteField: $("palette-field"), palette: $("palette"), paletteValue: $("palette-value"), paletteClear: $("palette-clear"),
  placementField: $("placement-field"), placement: $("placement"), placementCount: $("placement-count"),
};

const SCHEME_WORDS = { black_and_grey: "Black & grey", colour: "Colour" };
const schemeWords = (name) => SCHEME_WORDS[name] || words(name);
const words = (name) => String(name).replaceAll("_", " ");

let palettePicked = null;  // "#rrggbb" once the person picks one; an <input type=color> always holds some colour

/** Builds the controls from the server's vocabularies: {color: [...]|null, palette: bool, placement: [...]|null}. */
export function offerFilters(options) {
  const colors = options?.color || [];
  el.colorField.hidden = !colors.length;
  if (colors.length && !el.colorOptions.children.length) {
    const choice = (value, text, i) => [
      make("input", { id: `color-${i}`, name: "color", type: "radio", value, checked: value === "" }),
      make("label", { for: `color-${i}`, text })];
    el.colorOptions.replaceChildren(...choice("", "Any", 0),
      ...colors.flatMap((name, i) => choice(name, schemeWords(name), i + 1)));
  }
  el.paletteField.hidden = !options?.palette;
  const places = options?.placement || [];
  el.placementField.hidden = !places.length;
  if (places.length && !el.placement.children.length) {
    el.placement.replaceChildren(...places.map((place, i) => make("span", { className: "chip" },
      make("input", { type: "checkbox", id: `placement-${i}`, value: place }),
      make("label", { for: `placement-${i}`, text: words(place) }))));
  }
  updatePlacementCount();
}

function updatePlacementCount() {
  const picked = el.placement.querySelectorAll("input:checked").length;
  el.placementCount.textContent = picked ? `(${picked} picked)` : "";
}

function setPalette(value) {
  palettePicked = value;
  el.paletteValue.textContent = value || "none picked";
  el.paletteClear.hidden = !value;
  el.paletteField.classList.toggle("picked", Boolean(value));
}

/** What to send: {color, palette, placement: [...]}; empty when not picked (or not offered). */
export function selectedFilters() {
  const color = el.colorField.hidden ? "" : el.colorOptions.querySelector("input:checked")?.value || "";
  const palette = el.paletteField.hidden ? "" : palettePicked || "";
  const placement = el.placementField.hidden ? []
    : [...el.placement.querySelectorAll("input:checked")].map((input) => input.value);
  return { color, palette, placement };
}

/** A result's colour scheme, main colours (swatches) and likeliest placements, or null. */
export function looks(result) {
  const bits = [];
  if (result.color_scheme) bits.push(schemeWords(result.color_scheme));
  const places = Object.entries(result.placement || {}).sort((a, b) => b[1] - a[1]).slice(0, 2).map(([p]) => words(p));
  if (places.length) bits.push(`on the ${places.join(" or ")}`);
  const palette = (Array.isArray(result.palette) ? result.palette : []).filter((c) => /^#[0-9a-f]{6}$/i.test(c)).slice(0, 5);
  if (!bits.length && !palette.length) return null;
  const swatches = make("span", { className: "swatches", role: "img", "aria-label": `Main colours: ${palette.join(", ")}` },
    ...palette.map((colour) => {
      const swatch = make("span", { className: "swatch", title: colour });
      swatch.style.backgroundColor = colour;  // CSSOM, which the page's CSP allows (a style="" attribute it would not)
      return swatch;
    }));
  return make("p", { className: "looks" }, palette.length ? swatches : null, bits.join(" · "));
}

el.palette.addEventListener("input", () => setPalette(el.palette.value));
el.palette.addEventListener("change", () => setPalette(el.palette.value));
el.paletteClear.addEventListener("click", () => {
  setPalette(null);
  el.palette.focus();
});
el.placement.addEventListener("change", updatePlacementCount);
