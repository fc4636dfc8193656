"""Tenants: who owns a private collection, resolved from the API key a request presents.

``GATEWAY_API_KEYS`` entries are ``TENANT:KEY`` (several keys may name one tenant) or a
plain ``KEY``, which is a tenant of its own. ``:`` is the separator because tenant
names are limited to ``[a-z0-9_-]``: the part before the first colon is a tenant only
when it is a valid tenant name, and an entry whose prefix is not (``Ab+/:x``) is
refused at start rather than guessed at. A plain key's tenant is named from an HMAC of
the key under ``GATEWAY_TENANT_SECRET``: the name shows in logs and stored points, and
an unkeyed hash of it (what earlier versions used: ``legacy_plain_tenant``) let anyone who
saw a name test guesses of the key offline. The same secret gives the same name on every
restart and replica; tenant_migration.py moves collections stored under the old names.

Without API keys (a local install) every caller is the one tenant ``local``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

from starlette.types import Scope

LOCAL = "local"
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# Where the access middleware leaves the caller's tenant for the routes.
SCOPE_KEY = "tattoo.tenant"


def plain_tenant(key: str, secret: bytes) -> str:
    """A plain key's tenant: 96 bits of an HMAC, with a label so the secret keys nothing else alike."""
    return "key-" + hmac.new(secret, b"tenant-name\0" + key.encode(), hashlib.sha256).hexdigest()[:24]


def legacy_plain_tenant(key: str) -> str:
    """The name earlier versions gave a plain key (an unkeyed hash): only to find data stored under it."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def plain_keys(entries: Iterable[str]) -> list[str]:
    """The plain ``KEY`` entries (those without a ``:``), in order."""
    return [entry for entry in (raw.strip() for raw in entries) if entry and ":" not in entry]


def parse_api_keys(entries: Iterable[str], *, secret: bytes) -> dict[str, str]:
    """key -> tenant for every ``GATEWAY_API_KEYS`` entry; ValueError naming a bad one.
    ``secret`` keys the names of plain keys' tenants (GatewaySettings.tenant_key)."""
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
            key, tenant = entry, plain_tenant(entry, secret)
        if keys.get(key, tenant) != tenant:
            raise ValueError(f"one key is given to two tenants ({keys[key]!r} and {tenant!r})")
        keys[key] = tenant
    return keys


def tenant_of(scope: Scope) -> str:
    """The caller's tenant (set by ApiKeyMiddleware); ``local`` when keys are off."""
    return str(scope.get(SCOPE_KEY, LOCAL))

