// DOM helpers shared by the page's modules: elements built with textContent and
// attributes only (never innerHTML with data from the network), errors shown in words.
import { PlainError } from "./api.js";

export function make(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** Shows `err` in `target` (an element with role="alert"): its sentence, then the server's in small print. */
export function showError(target, err) {
  target.replaceChildren();
  if (!err) {
    target.hidden = true;
    return;
  }
  const plain = err instanceof PlainError ? err : new PlainError(String(err.message || err));
  target.append(make("p", { className: "error-message", text: plain.message }));
  if (plain.detail) target.append(make("p", { className: "error-detail", text: `Details: ${plain.detail}` }));
  target.hidden = false;
}
