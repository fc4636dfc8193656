"""Tenants: who owns a private collection, resolved from the API key a request presents.

``GATEWAY_API_KEYS`` entries are ``TENANT:KEY`` (several keys may name one tenant) or a
plain ``KEY``, which is a tenant of its own. ``:`` is the separator because tenant
names are limited to ``[a-z0-9_-]``: the part before the first colon is a tenant only
when it is a valid tenant name, and an entry whose prefix is not (``Ab+/:x``) is
refused at start rather than guessed at. A plain key's tenant is named from a hash of
the key, so the name in logs and stored points never reveals the key.

Without API keys (a local install) every caller is the one tenant ``local``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from starlette.types import Scope

LOCAL = "local"
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# Where the access middleware leaves the caller's tenant for the routes.
SCOPE_KEY = "tattoo.tenant"


def _plain_tenant(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def parse_api_keys(entries: Iterable[str]) -> dict[str, str]:
    """key -> tenant for every ``GATEWAY_API_KEYS`` entry; ValueError naming a bad one."""
    keys: dict[str, str] = {}
    for number, raw in enumerate(entries, start=1):
        entry = raw.strip()
        if not entry:
            continue
        head, colon, key = entry.partition(":")
        if colon:
            if not TENANT_NAME.fullmatch(head):
                # Named by position, never by its text: a start-up error must not print part of a key.
                raise ValueError(f"entry {number} is TENANT:KEY, but its tenant is not 1-63 characters of "
                                 "a-z, 0-9, '_' and '-' (starting with a letter or digit)")
            if not key:
                raise ValueError(f"the entry for tenant {head!r} has no key after the ':'")
            tenant = head
        else:
            key, tenant = entry, _plain_tenant(entry)
        if keys.get(key, tenant) != tenant:
            raise ValueError(f"one key is given to two tenants ({keys[key]!r} and {tenant!r})")
        keys[key] = tenant
    return keys


def tenant_of(scope: Scope) -> str:
    """The caller's tenant (set by ApiKeyMiddleware); ``local`` when keys are off."""
    return str(scope.get(SCOPE_KEY, LOCAL))

