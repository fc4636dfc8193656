"""URL normalisation and the key used to spot the same image found twice."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_TRACKING_PARAMS = frozenset({"fbclid", "gclid", "igshid", "mc_cid", "mc_eid", "ref_src", "si"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Pinterest serves one pin in several sizes under a size folder: /236x/, /736x/, /originals/.
_PINIMG_SIZE = re.compile(r"^/(?:\d+x\d*|originals)/")
MAX_URL_LENGTH = 4096


def normalise_url(url: str) -> str | None:
    """A cleaned absolute http(s) URL, or None when the URL is unusable.

    Lower-cases scheme and host, drops default ports, fragments and tracking parameters,
    and sorts what is left of the query so equal URLs compare equal.
    """
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        return None
    if url.startswith("//"):  # scheme-relative links are common in image search results
        url = "https:" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    if ":" in host:  # IPv6 literal
        netloc = f"[{host}]" if port in (None, _DEFAULT_PORTS[scheme]) else f"[{host}]:{port}"
    query = urlencode(
        sorted(
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() not in _TRACKING_PARAMS and not k.lower().startswith("utm_")
        )
    )
    return urlunsplit((scheme, netloc, parts.path or "/", query, ""))


def dedup_key(normalised_url: str) -> str:
    """Equal for URLs that almost surely show the same image.

    Ignores the scheme and a leading ``www.``, folds Pinterest's size folders together,
    and treats Reddit's preview and full-size hosts (which share the file name) as one.
    """
    parts = urlsplit(normalised_url)
    host = parts.netloc.removeprefix("www.")
    path, query = parts.path, parts.query
    if host.endswith("pinimg.com"):
        path = _PINIMG_SIZE.sub("/*/", path)
        query = ""
    elif host in ("i.redd.it", "preview.redd.it"):
        host, query = "redd.it", ""
    return f"{host}{path}?{query}" if query else f"{host}{path}"
