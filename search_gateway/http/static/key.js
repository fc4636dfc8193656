// The API key, for servers that require one (GATEWAY_API_KEYS). Kept for this browser
// tab only, in sessionStorage: never in a cookie (sent everywhere, kept for long) nor in
// a URL (logs, history, Referer). Asked for in the page's own dialog on the first 401,
// and again whenever the server refuses the key it was sent.

const STORE = "tattoo-search.api-key";

const dialog = document.getElementById("key-dialog");
const form = document.getElementById("key-form");
const input = document.getElementById("key-input");
const message = document.getElementById("key-message");
const cancel = document.getElementById("key-cancel");

/** The key for this tab, or "" when none was given (or storage is off). */
export function storedKey() {
  try {
    return sessionStorage.getItem(STORE) || "";
  } catch {
    return "";
  }
}

function storeKey(key) {
  try {
    sessionStorage.setItem(STORE, key);
  } catch {
    // Storage blocked (private mode settings): the key lives until the next 401 asks again.
  }
}

/** Drops `key` if it is still the one kept (a newer key typed meanwhile stays). */
export function forgetKey(key) {
  try {
    if (sessionStorage.getItem(STORE) === key) sessionStorage.removeItem(STORE);
  } catch {
    // Nothing kept, nothing to drop.
  }
}

let pending = null;

/**
 * Opens the key dialog and resolves with the key typed (also kept for the tab), or "" when
 * the person cancels. Requests refused at the same moment share the one dialog.
 */
export function askForKey({ rejected = false } = {}) {
  if (pending) return pending;
  pending = new Promise((resolve) => {
    message.textContent = rejected
      ? "That key was not accepted. Check it and enter it again."
      : "This search server needs an API key. It is kept for this browser tab only.";
    message.classList.toggle("key-rejected", rejected);
    input.value = "";
    const finish = () => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("close", onClose);
      if (dialog.open) dialog.close();
      pending = null;
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) {
        message.textContent = "Enter the API key (or choose Cancel).";
        input.focus();
        return;
      }
      storeKey(key);
      finish();
      resolve(key);
    };
    const onCancel = () => {
      finish();
      resolve("");
    };
    const onClose = () => onCancel();  // Escape closes the dialog: same as Cancel
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("close", onClose);
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  return pending;
}
