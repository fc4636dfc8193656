"""Refusing misspelt settings: a variable with the service's prefix that matches no
setting would otherwise do nothing, silently (EMBED_MAX_BATCH=32 leaves the batch at 8)."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping


def unknown_settings(environ: Mapping[str, str], prefix: str, known: Collection[str]) -> list[str]:
    """Variables starting with `prefix` that name no setting, sorted."""
    return sorted(key for key in environ if key.startswith(prefix) and key not in known)


def unknown_settings_message(environ: Mapping[str, str], prefix: str, known: Collection[str]) -> str | None:
    """One sentence naming every unknown `prefix*` variable and the closest valid name,
    or None when there is none."""
    unknown = unknown_settings(environ, prefix, known)
    if not unknown:
        return None
    # Compared without the prefix, which every name shares and which would otherwise make
    # any two names look alike.
    suffixes = {name[len(prefix):]: name for name in sorted(known) if name.startswith(prefix)}
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key[len(prefix):], list(suffixes), n=1, cutoff=0.6)
        parts.append(f"{key} (did you mean {suffixes[close[0]]}?)" if close else f"{key} (no setting has a similar name)")
    noun = "setting" if len(unknown) == 1 else "settings"
    return f"unknown {noun}: {'; '.join(parts)}; correct or unset it"
