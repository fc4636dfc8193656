"""Every parameter of POST /search and /search/stream, declared once: ``PARAMS``.

Each ``Param`` says its type (its ``Kind``), its bounds, its default and its description.
From that one table come the three ways a search may carry it (the query string, a form
field, a JSON body field: a query parameter wins over the body) and the OpenAPI
description of both routes (openapi.py). ``parse`` is pure: it reads what the request
says and checks it against the table and the settings, and nothing else. What needs the
store, the embed server or the image decoder (a collection that exists, a model served,
an upload that decodes) is checked by the handler after parsing (routes.py).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from search_gateway.collections.records import MAX_SEARCHED, NAME
from search_gateway.config import GatewaySettings
from search_gateway.errors import BadRequest
from search_gateway.fetch.colour import SCHEMES
from search_gateway.search.caption import PLACEMENTS, STYLES, SUBJECTS
from search_gateway.search.colour_filter import PALETTE_WEIGHT
from search_gateway.search.rerank import DEFAULT_RERANK, default_rerank
from search_gateway.search.rerank_stage import RERANK_K_LIMIT
from search_gateway.search.types import SOURCES

# The machine tags a gallery search may filter by: the captioner's vocabulary.
TAGS: tuple[str, ...] = (*STYLES, *SUBJECTS)
MAX_TAGS = 8

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class Setup:
    """What the defaults, the bounds and the description depend on: the settings, and the
    models the embed server serves (the description's enum; parsing does not need them)."""

    default_model: str
    max_results: int
    max_results_limit: int
    rerank_k: int
    gallery: bool
    models: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: GatewaySettings, models: list[str] | None = None) -> Setup:
        return cls(settings.default_model, settings.max_results, settings.max_results_limit, settings.rerank_k,
                   settings.gallery == "on", tuple(models) if models else (settings.default_model,))


class SearchParams(BaseModel):
    """A parsed search: every parameter checked, defaults filled in."""

    model_config = ConfigDict(frozen=True)

    model: str
    include_attention: bool
    rerank_k: int  # 0 when rerank is off
    # Issue 23: rerank not given, and the model re-ranks by default (rerank.DEFAULT_RERANK):
    # an image query re-ranks this many results from stored tokens only. 0: no default.
    rerank_default_k: int = 0
    max_results: int
    sources: frozenset[str]
    min_score: float | None
    tags: tuple[str, ...]
    like: str | None
    collections: tuple[str, ...] | None  # None: web and every collection of the caller
    text: str | None  # as sent (the handler collapses spaces and checks the length)
    # Refinement by example (search/refine.py): result ids marked relevant / not relevant.
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    # Colour and placement filters (issue 22, items 3 and 4).
    color: str | None = None
    palette: str | None = None  # "#rrggbb", lower case
    placement: tuple[str, ...] = ()


# ---- JSON's own types, checked before anything else (the body is one value) ----

def _type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object", str: "a string"}
    return "null" if value is None else names.get(type(value), "another type")


def _json_string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"The field {name!r} must be a string, not {_type(value)}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can spell a lone UTF-16 surrogate ("\ud800"); no backend can take one.
        raise BadRequest(f"The field {name!r} is not valid Unicode text (it holds a lone surrogate).") from None
    return value


# A value as a request carries it: the text of a query parameter or form field, or the
# JSON value already type-checked by its kind (a bool, an int, a float, a list of names).
Raw = str | bool | int | float | list[str]


class Kind:
    """How one parameter is read: from a string, from a JSON value, and described."""

    def json(self, value: Any, name: str) -> Raw:
        return _json_string(value, name)

    def schema(self, setup: Setup) -> dict[str, Any]:
        raise NotImplementedError


class Text(Kind):
    def __init__(self, schema: dict[str, Any]) -> None:
        self._schema = schema

    def schema(self, setup: Setup) -> dict[str, Any]:
        return dict(self._schema)


class Model(Kind):
    def schema(self, setup: Setup) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "enum": list(setup.models)}
        if setup.default_model in setup.models:
            schema["default"] = setup.default_model
        return schema


class Boolean(Kind):
    def __init__(self, default: bool) -> None:
        self.default = default

    def json(self, value: Any, name: str) -> Raw:
        if not isinstance(value, bool):
            raise BadRequest(f"The field {name!r} must be a boolean (true or false), not {_type(value)}.")
        return value

    def read(self, raw: Raw | None, name: str) -> bool:
        if raw is None:
            return self.default
        if isinstance(raw, bool):
            return raw
        return boolean_text(str(raw), name)

    def schema(self, setup: Setup) -> dict[str, Any]:
        return {"type": "boolean", "default": self.default}


class Integer(Kind):
    """An integer from 1 to ``high(setup)``."""

    def __init__(self, high: str) -> None:
        self.high = high  # the Setup field (max_results_limit) or "rerank" (RERANK_K_LIMIT)

    def bound(self, setup: Setup) -> int:
        return RERANK_K_LIMIT if self.high == "rerank" else setup.max_results_limit

    def json(self, value: Any, name: str) -> Raw:
        # 33.0 is an integer to JSON Schema (and to a JavaScript client): accepted as 33.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest(f"The field {name!r} must be an integer, not {_type(value)}.")
        return value

    def read(self, raw: Raw | None, name: str, default: int, setup: Setup) -> int:
        high = self.bound(setup)
        if isinstance(raw, int) and not isinstance(raw, bool):
            if not 1 <= raw <= high:
                raise BadRequest(f"Parameter {name!r} must be between 1 and {high}.")
            return raw
        return integer_text(None if raw is None else str(raw), name, default, 1, high)

    def schema(self, setup: Setup) -> dict[str, Any]:
        return {"type": "integer", "minimum": 1, "maximum": self.bound(setup)}


class Score(Kind):
    """A cosine similarity, -1 to 1."""

    def json(self, value: Any, name: str) -> Raw:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise BadRequest(f"The field {name!r} must be a number, not {_type(value)}.")
        return value

    def read(self, raw: Raw | None, name: str) -> float | None:
        if raw is None or raw == "":
            return None
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            try:
                value = float(raw)
            except OverflowError:  # a huge JSON integer: out of range like infinity
                value = math.inf
        else:
            text = str(raw)
            try:
                value = float(text)
            except ValueError:
                raise BadRequest(f"Parameter {name!r} must be a number, not {text[:40]!r}.") from None
        if not -1.0 <= value <= 1.0:  # also refuses nan
            raise BadRequest(f"Parameter {name!r} is a cosine similarity: between -1 and 1.")
        return value

    def schema(self, setup: Setup) -> dict[str, Any]:
        return {"type": "number", "minimum": -1, "maximum": 1}


class Names(Kind):
    """A comma-separated string, or in JSON a list of strings (its items)."""

    def __init__(self, schema: dict[str, Any], item: dict[str, Any], most: int | None) -> None:
        self._schema, self.item, self.most = schema, item, most

    def json(self, value: Any, name: str) -> Raw:
        if isinstance(value, str):
            return _json_string(value, name)
        wrong = f"The field {name!r} must be a string (comma-separated) or a list of strings"
        if not isinstance(value, list):
            raise BadRequest(f"{wrong}, not {_type(value)}.")
        odd = [item for item in value if not isinstance(item, str)]
        if odd:
            raise BadRequest(f"{wrong}, not a list holding {_type(odd[0])}.")
        items = [_json_string(item, name) for item in value]
        if any("," in item for item in items):
            # "a,b" would silently become two names; no name holds a comma.
            raise BadRequest(f"An item of the field {name!r} holds a comma: give each name as its own item.")
        return items

    def schema(self, setup: Setup) -> dict[str, Any]:
        return dict(self._schema)


def items_of(raw: Raw) -> list[str]:
    """The names a comma list or a JSON list holds, unstripped."""
    return list(raw) if isinstance(raw, list) else str(raw).split(",")


def boolean_text(raw: str, name: str) -> bool:
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise BadRequest(f"Parameter {name!r} must be true or false, not {raw!r}.")


def integer_text(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"Parameter {name!r} must be an integer, not {raw!r}.") from None
    if not low <= value <= high:
        raise BadRequest(f"Parameter {name!r} must be between {low} and {high}.")
    return value


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    description: str | None = None
    in_query: bool = True  # text is a body field only
    gallery_only: bool = False  # not described with GATEWAY_GALLERY=off


# A collection's name (collections/records.py NAME) and a search's comma list of them.
NAME_PATTERN = NAME.pattern
_COLLECTIONS_PATTERN = f"^$|^{NAME_PATTERN}(,{NAME_PATTERN}){{0,{MAX_SEARCHED - 1}}}$"
# Empty, or 1 to 8 vocabulary tags separated by commas (parse checks the same).
_TAG = "(" + "|".join(re.escape(t) for t in TAGS) + ")"
_TAGS_PATTERN = f"^$|^{_TAG}(,{_TAG}){{0,{MAX_TAGS - 1}}}$"
_SOURCES_ENUM = ["gallery,web", "gallery", "web", "web,gallery"]
# Colour and placement (issue 22): a colour #rrggbb (the # optional), placements from the vocabulary.
_HEX = "#?[0-9a-f]{6}"
_PALETTE_PATTERN = "^#?[0-9a-fA-F]{6}$"
_PLACE = "(" + "|".join(PLACEMENTS) + ")"
_PLACEMENTS_PATTERN = f"^$|^{_PLACE}(,{_PLACE}){{0,{len(PLACEMENTS) - 1}}}$"

# Spaces are collapsed before the length is checked, so the query needs a visible character.
# Python's str.split (the collapse) also splits on \x1c-\x1f and \x85, which ECMAScript's \S
# (what a client or schemathesis reads the pattern with) counts as visible: named here.
TEXT_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 300, "pattern": r"[^\s\x1c-\x1f\x85]"}

# Issue 23: the models that re-rank by default, as the description says it.
_DEFAULT_RERANK_TEXT = "on for " + ", ".join(sorted(DEFAULT_RERANK)) + ", off for the others"


class PerModelBoolean(Boolean):
    """A boolean whose default depends on the model: the schema names none (the description says
    which); ``read`` gives ``default`` when it is not given, and parse() looks at that itself."""

    def schema(self, setup: Setup) -> dict[str, Any]:
        return {"type": "boolean"}

# The kinds parse() reads by name, typed.
_INCLUDE_ATTENTION, _RERANK = Boolean(False), PerModelBoolean(False)
_MAX_RESULTS, _RERANK_K = Integer("max_results_limit"), Integer("rerank")
_MIN_SCORE = Score()

PARAMS: tuple[Param, ...] = (
    Param("text", Text(TEXT_SCHEMA), "A text query, for a model with a text tower (supports_text in GET /models); "
          "at most 300 characters.", in_query=False),
    Param("embedding_model", Model(), "A model the embed server serves (GET /models)."),
    Param("include_patch_attention", _INCLUDE_ATTENTION),
    Param("max_results", _MAX_RESULTS),
    Param("rerank", _RERANK,
          "Two-stage search: re-rank the best rerank_k results by patch tokens (the query image's against each "
          "result's); each result then has global_score and local_score, and score is their mix. An image query "
          "only: with text or like it is 400 rerank_needs_image. Default: per model (" + _DEFAULT_RERANK_TEXT +
          "): not given, an image search re-ranks its results from the patch tokens the gallery stores "
          "(a result without stored tokens keeps its global score and place, local_score null); true also "
          "computes the others' tokens now (slow); false: off."),
    Param("rerank_k", _RERANK_K,
          "How many of the best results are re-ranked (rerank=true); default GATEWAY_RERANK_K."),
    Param("sources", Names({"type": "string", "enum": _SOURCES_ENUM, "default": "gallery,web"},
                           {"type": "string", "enum": sorted(SOURCES)}, None),
          "Where results come from: the gallery (at once, no web traffic), the web, or both."),
    Param("min_score", _MIN_SCORE, "Leave out results scored below this cosine similarity."),
    Param("tags", Names({"type": "string", "pattern": _TAGS_PATTERN}, {"type": "string", "enum": list(TAGS)},
                        MAX_TAGS),
          "Comma-separated machine tags (styles and subjects, at most 8); gallery results must carry all of them."),
    Param("like", Text({"type": "string", "format": "uuid"}),
          "Instead of an image or text (which are then not used): the id of a result, to search by its stored "
          "vector (a result of web or of one of the caller's collections).", gallery_only=True),
    Param("collections", Names({"type": "string", "pattern": _COLLECTIONS_PATTERN},
                               {"type": "string", "pattern": f"^{NAME_PATTERN}$"}, MAX_SEARCHED),
          "Comma-separated collections the gallery results come from: 'web' and the caller's own "
          f"(at most {MAX_SEARCHED}); default: web and all of the caller's. An unknown one (or another tenant's) "
          "is 404. Web results still stream unless sources=gallery.", gallery_only=True),
    # ---- colour scheme, palette and body placement (issue 22, items 3 and 4)
    Param("color", Text({"type": "string", "enum": list(SCHEMES)}),
          "Only results of this colour scheme, read from their pixels: black_and_grey or colour (gallery results "
          "in the store query; web results by the pixels downloaded; a result whose scheme is not known is left "
          "out)."),
    Param("palette", Text({"type": "string", "pattern": _PALETTE_PATTERN}),
          "One colour, #rrggbb (the # may be left out or sent as %23): the results that pass the other filters "
          f"are ordered by score + {PALETTE_WEIGHT} x palette_match, palette_match (0 to 1, in each result) being "
          "how near the colour is to the result's dominant palette."),
    Param("placement", Names({"type": "string", "pattern": _PLACEMENTS_PATTERN},
                             {"type": "string", "enum": list(PLACEMENTS)}, len(PLACEMENTS)),
          "Comma-separated body placements; gallery results must carry ANY of them (a tattoo sits in one place). "
          "Scored by the text tower (clip, siglip); other models have none, and the reply's notes say so."),
)
# Refinement by example: the ids of results marked relevant (positive) or not (negative).
MAX_MARKS = 20
_UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_MARKS_PATTERN = f"^$|^{_UUID_PATTERN}(,{_UUID_PATTERN}){{0,{MAX_MARKS - 1}}}$"
PARAMS = (*PARAMS,
          Param("positive", Names({"type": "string", "pattern": _MARKS_PATTERN}, {"type": "string", "format": "uuid"},
                                  MAX_MARKS),
                f"Comma-separated ids of results marked relevant (at most {MAX_MARKS}; results of web or of the "
                "caller's collections, else 404): the search is refined towards them (GATEWAY_REFINE_METHOD), "
                "with the query image, text or like, or alone. Marked results do not come back.", gallery_only=True),
          Param("negative", Names({"type": "string", "pattern": _MARKS_PATTERN}, {"type": "string", "format": "uuid"},
                                  MAX_MARKS),
                f"Comma-separated ids of results marked not relevant (at most {MAX_MARKS}): results like them are "
                "pushed down; they do not come back. Needs a query (image, text, like) or positive.",
                gallery_only=True))
BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}


def json_fields(body: bytes) -> dict[str, Raw]:
    """The fields of a JSON body, each checked to be of its parameter's JSON type."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise BadRequest("The JSON body could not be parsed.") from None
    if not isinstance(payload, dict):
        raise BadRequest('The JSON body must be an object, such as {"text": "rose tattoo"}.')
    unknown = [name for name in payload if name not in BY_NAME]
    if unknown:
        # repr escapes anything a JSON reply could not carry (a lone surrogate).
        raise BadRequest(f"Unknown field {unknown[0]!r} in the JSON body; the fields are {', '.join(BY_NAME)}.")
    return {name: BY_NAME[name].kind.json(value, name) for name, value in payload.items()}


def parse(query: Mapping[str, str], body: Mapping[str, Any] | None, setup: Setup) -> SearchParams:
    """The search a request asks for. ``body``: the form's fields, or ``json_fields``.

    Pure: no store, no embed server, no image. The checks run in the order they always
    have, so a request with several mistakes is told the same first one."""

    def raw(name: str) -> Raw | None:
        value = query.get(name)
        if value is not None:
            return value
        if body is None:
            return None
        field = body.get(name)
        # A form's file upload is no parameter; a JSON value is already of its kind.
        return None if field is None or (not isinstance(field, (str, bool, int, float, list))) else field

    model = raw("embedding_model") or setup.default_model
    include_attention = _INCLUDE_ATTENTION.read(raw("include_patch_attention"), "include_patch_attention")
    asked_k = rerank_k = _RERANK_K.read(raw("rerank_k"), "rerank_k", setup.rerank_k, setup)
    if not _RERANK.read(raw("rerank"), "rerank"):
        rerank_k = 0
    max_results = _MAX_RESULTS.read(raw("max_results"), "max_results", setup.max_results, setup)
    sources = _sources(raw("sources"))
    # Issue 23: rerank not given -> the model's default (search/rerank.py DEFAULT_RERANK) for a
    # search of the gallery, from its stored patch tokens only; rerank=false off, true as before.
    rerank_default_k = asked_k if raw("rerank") is None and setup.gallery and "gallery" in sources \
        and default_rerank(str(model)) else 0
    min_score = _MIN_SCORE.read(raw("min_score"), "min_score")
    tags = _tags(raw("tags"))
    like = _like(raw("like"))
    if "gallery" in sources and not setup.gallery and (like or sources == {"gallery"}):
        raise BadRequest("The gallery is off on this gateway (GATEWAY_GALLERY=off): search with sources=web.")
    collections = _collections(raw("collections"))
    text = body.get("text") if body is not None else None
    positive, negative = _marks(raw("positive"), "positive"), _marks(raw("negative"), "negative")
    if (positive or negative) and not setup.gallery:
        raise BadRequest("The gallery is off on this gateway (GATEWAY_GALLERY=off): 'positive' and 'negative' "
                         "name gallery results, so there is nothing to refine by.")
    color, palette, placement = _color(raw("color")), _palette(raw("palette")), _placement(raw("placement"))
    return SearchParams(model=str(model), include_attention=include_attention, rerank_k=rerank_k,
                        rerank_default_k=rerank_default_k,
                        max_results=max_results, sources=sources, min_score=min_score, tags=tags, like=like,
                        collections=collections, text=text if isinstance(text, str) else None,
                        positive=positive, negative=negative, color=color, palette=palette, placement=placement)


def _marks(raw: Raw | None, name: str) -> tuple[str, ...]:
    """Result ids, each a UUID, without repeats; whether each exists and is the caller's is
    the search's check (it needs the store: 404 as for like)."""
    if raw is None:
        return ()
    items = [item.strip() for item in items_of(raw) if item.strip()]
    ids: list[str] = []
    for item in items:
        try:
            ids.append(str(uuid.UUID(item)))
        except ValueError:
            raise BadRequest(f"Parameter {name!r} takes result ids (the 'id' of a result, a UUID), "
                             f"comma-separated; {item[:60]!r} is not one.") from None
    unique = tuple(dict.fromkeys(ids))
    if len(unique) > MAX_MARKS:
        raise BadRequest(f"Parameter {name!r} takes at most {MAX_MARKS} result ids; {len(unique)} were given.")
    return unique


def _sources(raw: Raw | None) -> frozenset[str]:
    if raw is None:
        return frozenset(SOURCES)
    text = ",".join(items_of(raw))
    if not text.strip():
        return frozenset(SOURCES)
    names = [name.strip().lower() for name in items_of(raw) if name.strip()]
    wrong = [name for name in names if name not in SOURCES]
    if wrong or not names:
        raise BadRequest(f"Parameter 'sources' takes {' or '.join(SOURCES)} (or both, comma-separated), "
                         f"not {text[:80]!r}.")
    return frozenset(names)


def _tags(raw: Raw | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    names = tuple(dict.fromkeys(" ".join(t.split()).lower() for t in items_of(raw) if t.strip()))
    if len(names) > MAX_TAGS:
        raise BadRequest(f"Parameter 'tags' takes at most {MAX_TAGS} tags.")
    wrong = [name for name in names if name not in TAGS]
    if wrong:
        raise BadRequest(f"Unknown tag {wrong[0][:60]!r}; the tags are the styles and subjects of the "
                         "captioner's vocabulary (docs/gateway.md lists them).")
    return names


def _like(raw: Raw | None) -> str | None:
    if raw is None:
        return None
    try:
        return str(uuid.UUID(str(raw).strip()))
    except ValueError:
        raise BadRequest("Parameter 'like' must be a gallery image id (a UUID, the 'id' of a result).") from None


def _collections(raw: Raw | None) -> tuple[str, ...] | None:
    """The names asked for, without repeats; whether each is the caller's is the handler's
    check (it needs the store)."""
    if raw is None or not ",".join(items_of(raw)).strip():
        return None
    names = tuple(dict.fromkeys(n.strip() for n in items_of(raw) if n.strip()))
    if len(names) > MAX_SEARCHED:
        raise BadRequest(f"Parameter 'collections' names at most {MAX_SEARCHED} collections.")
    return names


# ---- colour scheme, palette and body placement (issue 22, items 3 and 4)

def _color(raw: Raw | None) -> str | None:
    if raw is None or not str(raw).strip():
        return None
    value = str(raw).strip().lower()
    if value not in SCHEMES:
        raise BadRequest(f"Parameter 'color' takes {' or '.join(SCHEMES)}, not {value[:40]!r}.")
    return value


def _palette(raw: Raw | None) -> str | None:
    if raw is None or not str(raw).strip():
        return None
    value = str(raw).strip().lower()
    if not re.fullmatch(_HEX, value):
        raise BadRequest(f"Parameter 'palette' is one colour written #rrggbb (such as #c81e28; the # may be left "
                         f"out), not {value[:40]!r}.")
    return "#" + value.lstrip("#")


def _placement(raw: Raw | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    names = tuple(dict.fromkeys(n.strip().lower().replace(" ", "_") for n in items_of(raw) if n.strip()))
    wrong = [n for n in names if n not in PLACEMENTS]
    if wrong:
        raise BadRequest(f"Unknown placement {wrong[0][:40]!r}; the placements are {', '.join(PLACEMENTS)}.")
    return names


# ---- The OpenAPI description of the same table (openapi.py builds the document) ----

def query_parameters(setup: Setup) -> list[dict[str, Any]]:
    """The query parameters of /search and /search/stream, as OpenAPI describes them."""
    described = []
    for p in PARAMS:
        if not p.in_query or (p.gallery_only and not setup.gallery):
            continue
        schema = p.kind.schema(setup)
        if p.name == "sources" and not setup.gallery:  # GATEWAY_GALLERY=off: web only
            schema = {"type": "string", "enum": ["web"], "default": "web"}
        described.append({"name": p.name, "in": "query", "schema": schema,
                          **({"description": p.description} if p.description else {})})
    return described


def model_parameter(setup: Setup) -> dict[str, Any]:
    """embedding_model as every route that takes one describes it (/analyze-attention too)."""
    return next(p for p in query_parameters(setup) if p["name"] == "embedding_model")


def _field(param: dict[str, Any]) -> dict[str, Any]:
    return {**param["schema"], **({"description": param["description"]} if "description" in param else {})}


def text_field(description: str | None = None) -> dict[str, Any]:
    return {**TEXT_SCHEMA, "description": description or BY_NAME["text"].description}


def form_fields(setup: Setup) -> dict[str, Any]:
    """Every query parameter as a form field (the query string wins)."""
    return {p["name"]: _field(p) for p in query_parameters(setup)}


def json_body(setup: Setup) -> dict[str, Any]:
    """The JSON body: text, and each query parameter with its query schema; a comma list
    may also be a JSON array of its items."""
    properties: dict[str, Any] = {"text": text_field()}
    for param in query_parameters(setup):
        field = _field(param)
        kind = BY_NAME[param["name"]].kind
        if isinstance(kind, Names):
            item = kind.item
            if param["name"] == "sources":  # the names the query enum allows (web alone with the gallery off)
                item = {"type": "string", "enum": sorted({n for listed in field["enum"] for n in listed.split(",")})}
            as_string = {k: v for k, v in field.items() if k not in ("description", "default")}
            as_array = {"type": "array", "items": item, **({"maxItems": kind.most} if kind.most else {})}
            field = {"oneOf": [as_string, as_array],
                     **{k: v for k, v in field.items() if k in ("description", "default")}}
        properties[param["name"]] = field
    body: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if "like" in properties:  # like=<id> is the query when given: text is then not needed (nor used)
        # (positive alone is a query too: the refined one, built from the marks)
        marked = {"anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1}]}
        body["anyOf"] = [{"required": ["text"]}, {"required": ["like"]},
                         {"required": ["positive"], "properties": {"positive": marked}}]
    else:
        body["required"] = ["text"]
    return body
