"""The JSON body of POST /search and /search/stream: every search parameter, in JSON's own types.

Each field is type-checked here and turned into the very string a query parameter or a
form field would carry, so routes.py reads all three the same way and every range and
vocabulary check stays there, in one place. A query parameter given as well wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from search_gateway.errors import BadRequest


def _type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object", str: "a string"}
    return "null" if value is None else names.get(type(value), "another type")


def string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"The field {name!r} must be a string, not {_type(value)}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can spell a lone UTF-16 surrogate ("\ud800"); no backend can take one.
        raise BadRequest(f"The field {name!r} is not valid Unicode text (it holds a lone surrogate).") from None
    return value


def names(value: Any, name: str) -> str:
    """A comma-separated string, as in the query, or a list of strings: the comma-separated string."""
    if isinstance(value, str):
        return string(value, name)
    wrong = f"The field {name!r} must be a string (comma-separated) or a list of strings"
    if not isinstance(value, list):
        raise BadRequest(f"{wrong}, not {_type(value)}.")
    odd = [item for item in value if not isinstance(item, str)]
    if odd:
        raise BadRequest(f"{wrong}, not a list holding {_type(odd[0])}.")
    items = [string(item, name) for item in value]
    if any("," in item for item in items):
        # Joined, "a,b" would silently become two names; no name holds a comma.
        raise BadRequest(f"An item of the field {name!r} holds a comma: give each name as its own item.")
    return ",".join(items)


def number(value: Any, name: str) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise BadRequest(f"The field {name!r} must be a number, not {_type(value)}.")
    return str(value)  # float() reads it back; nan and infinity (JSON extensions) fail the range check


def integer(value: Any, name: str) -> str:
    # 33.0 is an integer to JSON Schema (and to a JavaScript client): accepted as 33.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"The field {name!r} must be an integer, not {_type(value)}.")
    return str(value)


def boolean(value: Any, name: str) -> str:
    if not isinstance(value, bool):
        raise BadRequest(f"The field {name!r} must be a boolean (true or false), not {_type(value)}.")
    return "true" if value else "false"


# Every parameter /search takes in its query string, with the JSON type it takes here.
# (Images are uploads: a JSON body searches by text or by like=<id>.)
FIELDS: dict[str, Callable[[Any, str], str]] = {
    "text": string, "embedding_model": string, "max_results": integer,
    "include_patch_attention": boolean, "rerank": boolean, "rerank_k": integer,
    "sources": names, "min_score": number, "tags": names, "like": string, "collections": names,
}


def fields(raw: bytes) -> dict[str, str]:
    """The fields of a JSON body, type-checked, as the strings a form would carry."""
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise BadRequest("The JSON body could not be parsed.") from None
    if not isinstance(payload, dict):
        raise BadRequest('The JSON body must be an object, such as {"text": "rose tattoo"}.')
    unknown = [name for name in payload if name not in FIELDS]
    if unknown:
        # repr escapes anything a JSON reply could not carry (a lone surrogate).
        raise BadRequest(f"Unknown field {unknown[0]!r} in the JSON body; the fields are {', '.join(FIELDS)}.")
    return {name: FIELDS[name](value, name) for name, value in payload.items()}
