"""The OpenAPI description of the HTTP API, matching the routes exactly: written by hand,
but for the search parameters, which come from the table routes parse them by
(search_params.PARAMS).

Exact means: every status a route can answer is listed with the body it carries, every
limit the route enforces is in the schema, and the model enum is what the embed server
serves now (so a schema-driven client or fuzzer never learns a model it cannot use).
tests/search_gateway/http/test_gateway_openapi_fuzz.py holds the server to it.
"""

from __future__ import annotations

from typing import Any

from search_gateway.collections.records import NAME, NAME_RULE, PAGE
from search_gateway.config import GatewaySettings
from search_gateway.feedback.marks import MAX_PAGE as MARKS_MAX_PAGE
from search_gateway.gallery.spaces import WEB
from search_gateway.http import search_params
from search_gateway.http.collection_routes import CURSOR, LIST_DEFAULT, MAX_HASHES
from search_gateway.http.upload_form import MAX_TAGS as UPLOAD_MAX_TAGS
from search_gateway.http.upload_form import TEXT_FIELDS
from search_gateway.requestid import HEADER as REQUEST_ID_HEADER

_JSON = "application/json"
# Errors every admitted request may meet: no key (401), over the rate limit (429). With keys
# configured, every route but the probes may also answer 400 ambiguous_api_key (added below).
_ACCESS = (401, 429)
# Errors of the POST routes with a body: malformed (400), over the size limit (413).
_BODY = (400, 413)
# Errors from the uploaded image: not an image (415), truncated or a pixel bomb (422).
_IMAGE = (415, 422)


def _error(description: str = "Error") -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _error() for code in codes}


def _search_body(setup: search_params.Setup) -> dict[str, Any]:
    # Every query parameter may come as a form field too (search_params.parse; the query string wins).
    as_fields = search_params.form_fields(setup)
    text = search_params.text_field()
    return {
        # Required but for like=<id>, which the description cannot say; a like search
        # without a body is answered too (an image or text sent with it is not used).
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "The query image."},
                    "text": search_params.text_field("Instead of file: a text query."),
                    **as_fields,
                },
                "anyOf": [{"required": ["file"]}, {"required": ["text"]}],
                # A form holds at most 16 fields (routes._form): only these are described.
                "additionalProperties": False,
            }},
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["text"],
                                                             "properties": {"text": text, **as_fields},
                                                             "additionalProperties": False}},
            _JSON: {"schema": search_params.json_body(setup)},
        },
    }


# A collection's name (collections/records.py NAME) and a search's comma list of them.
_NAME = NAME.pattern
_NAME_SCHEMA: dict[str, Any] = {"type": "string", "pattern": f"^{_NAME}$", "not": {"const": WEB},
                                "description": f"{NAME_RULE}; 'web' is reserved."}
# The tags of an upload: at most 16 comma-separated, each at most 64 characters (uploads.py).
_UPLOAD_TAGS_PATTERN = f"^[^,]{{0,64}}(,[^,]{{0,64}}){{0,{UPLOAD_MAX_TAGS - 1}}}$"


_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "detail", "request_id"], "properties": {
        "error": {"type": "string", "description": "A stable machine-readable code."},
        "detail": {"type": "string", "description": "What went wrong, in a sentence."},
        "request_id": {"type": "string", "description": "Quote it to an operator: the log has the detail."}}},
    "SearchResult": {"type": "object", "required": ["url", "score"], "properties": {
        "url": {"type": "string"}, "source_url": {"type": "string"}, "platform": {"type": "string"},
        "title": {"type": "string"}, "engine": {"type": "string"},
        "score": {"type": "number", "description": "The cosine similarity; after re-ranking, the combined score."},
        "global_score": {"type": "number", "description": "Re-ranked: the global vectors' cosine."},
        "local_score": {"type": ["number", "null"],
                        "description": "Re-ranked: the patch tokens' score (0 to 1); null: re-ranking reached this "
                                       "result but it had no patch tokens (none stored yet, or its image could not "
                                       "be had), so it kept its global score (notes say why)."},
        "feedback": {"type": "number", "description": "The change the caller's stored feedback marks of similar "
                                                      "queries made to score (at most GATEWAY_FEEDBACK_BOOST_WEIGHT "
                                                      "either way)."},
        "thumbnail_url": {"type": "string", "description": "A sealed link to the result's picture: a web gallery "
                                                           "result's kept 256 px WebP, else the source resized."},
        "stale": {"type": "boolean", "description": "Present (true) when the result's source URL answered 404/410, "
                                                    "serves another picture, or failed 3 checks in a row; ordered "
                                                    "after live results of practically equal score."},
        "source": {"type": "string", "enum": ["gallery", "web"]},
        "id": {"type": "string", "format": "uuid", "description": "The image's gallery id, for like=<id>."},
        "collection": {"type": "string", "description": "'web', or the caller's collection it came from."},
        "tags": {"type": "object", "additionalProperties": {"type": "number"},
                 "description": "Machine (zero-shot) style and subject tags with their scores."},
        "patch_attention": {"type": "object", "properties": {
            "overall_similarity": {"type": "number"}, "query_grid_size": {"type": "integer"},
            "candidate_grid_size": {"type": "integer"}, "attention_summary": {"type": "object"}}},
    }},
    "SearchResponse": {"type": "object", "required": ["caption", "results", "embedding_model"], "properties": {
        "caption": {"type": "string"}, "caption_source": {"type": "string"},
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/SearchResult"}},
        "embedding_model": {"type": "string"}, "embedding_weights": {"type": "string"},
        "patch_attention_enabled": {"type": "boolean"},
        "partial": {"type": "boolean"}, "stats": {"type": "object"}, "timings": {"type": "object"},
        "reranked": {"type": "boolean", "description": "True when the best results were re-ranked by patch tokens."},
        "query_ref": {"type": "string", "description": "Opaque: send it back with POST /feedback to mark a result "
                                                        "of this search relevant or not."},
    }},
    "AttentionResponse": {"type": "object", "required": ["candidate_url", "embedding_model", "similarity_analysis"],
                          "properties": {
        "candidate_url": {"type": "string"}, "embedding_model": {"type": "string"},
        "query_image_size": {"type": "array", "items": {"type": "integer"}},
        "candidate_image_size": {"type": "array", "items": {"type": "integer"}},
        "similarity_analysis": {"type": "object"}, "attention_matrix_shape": {"type": "array"},
        "query_grid": {"type": "array"}, "candidate_grid": {"type": "array"},
        "top_correspondences": {"type": "array"}, "visualizations": {"type": "object"},
    }},
    "Models": {"type": "object", "required": ["models", "default_model"], "properties": {
        "models": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "supports_text": {"type": "boolean"}, "state": {"type": "string"},
            "weights": {"type": "string"}, "error": {"type": "string"}}}},
        "default_model": {"type": "string"}}},
    "Collection": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"},
        "shared": {"type": "boolean", "description": "True for 'web', the public images every tenant searches."},
        "images": {"type": "integer", "minimum": 0}, "models": {"type": "array", "items": {"type": "string"}},
        "index": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/IndexState"},
                  "description": "Per model: indexed, or its last reindex (queued, reindexing with done/total, "
                                 "failed with a reason, interrupted by a restart: ask again)."},
        "created": {"type": "string", "format": "date-time"}, "updated": {"type": "string", "format": "date-time"}}},
    "IndexState": {"type": "object", "required": ["state"], "properties": {
        "state": {"type": "string", "enum": ["indexed", "queued", "reindexing", "failed", "interrupted"]},
        "done": {"type": "integer", "minimum": 0}, "total": {"type": "integer", "minimum": 0},
        "skipped": {"type": "integer", "minimum": 0,
                    "description": "Images whose original is missing or unreadable (not embedded)."},
        "started": {"type": "string", "format": "date-time"}, "updated": {"type": "string", "format": "date-time"},
        "reason": {"type": "string"}}},
    "Reindex": {"type": "object", "required": ["collection", "model", "state"], "properties": {
        "collection": {"type": "string"}, "model": {"type": "string"}, "state": {"type": "string"},
        "total": {"type": "integer", "minimum": 0}, "done": {"type": "integer", "minimum": 0},
        "skipped": {"type": "integer", "minimum": 0}, "reason": {"type": "string"},
        "started": {"type": "string", "format": "date-time"}, "updated": {"type": "string", "format": "date-time"}}},
    "Collections": {"type": "object", "required": ["collections", "usage"], "properties": {
        "collections": {"type": "array", "items": {"$ref": "#/components/schemas/Collection"}},
        "usage": {"type": "object", "required": ["images", "max_images", "bytes", "max_bytes", "collections",
                                                 "max_collections"], "properties": {
            "images": {"type": "integer", "minimum": 0,
                       "description": "Images in all the caller's collections, uploads under way included."},
            "max_images": {"type": ["integer", "null"], "description": "The most they may hold (null: no limit)."},
            "bytes": {"type": "integer", "minimum": 0,
                      "description": "Bytes of their originals (each size counted up to 10% over), deleted ones "
                                     "not yet collected included."},
            "max_bytes": {"type": ["integer", "null"], "description": "The most bytes (null: no limit)."},
            "collections": {"type": "integer", "minimum": 0, "description": "The caller's collections."},
            "max_collections": {"type": ["integer", "null"],
                                "description": "The most collections (null: no limit)."}}}}},
    "UploadResults": {"type": "object", "required": ["collection", "results"], "properties": {
        "collection": {"type": "string"},
        "results": {"type": "array", "description": "One entry per file or url field, in order.", "items": {
            "type": "object", "required": ["input", "status"], "properties": {
                "input": {"type": "string", "description": "The URL, or the file name as stored: control and "
                                                           "direction characters removed, no '..' or empty path "
                                                           "parts, at most 255 characters."},
                "note": {"type": "string", "description": "When the stored file name is not the one sent: how "
                                                          "it was changed."},
                "status": {"type": "string", "enum": ["added", "duplicate", "rejected"]},
                "id": {"type": "string", "format": "uuid", "description": "added or duplicate: the image's id."},
                "thumbnail": {"type": "string", "description": "added: a signed thumbnail link."},
                "reason": {"type": "string", "description": "rejected: why, in a sentence."},
                "code": {"type": "string", "enum": ["quota_reached"],
                         "description": "rejected, where a client may act on it: the tenant's quota is reached "
                                        "(GATEWAY_TENANT_MAX_IMAGES); sending more is pointless until images go."}}}}}},
    "CollectionImage": {"type": "object", "required": ["id", "collection", "sha256", "thumbnail"], "properties": {
        "id": {"type": "string", "format": "uuid"}, "collection": {"type": "string"}, "sha256": {"type": "string"},
        "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]},
        "filename": {"type": "string"}, "urls": {"type": "array", "items": {"type": "string"}},
        "tags": {"type": "array", "items": {"type": "string"}}, "models": {"type": "array", "items": {"type": "string"}},
        "added": {"type": ["string", "null"], "format": "date-time"}, "thumbnail": {"type": "string"}}},
    "ImagePage": {"type": "object", "required": ["collection", "total", "next", "images"], "properties": {
        "collection": {"type": "string"},
        "total": {"type": "integer", "minimum": 0, "description": "How many images the collection holds."},
        "next": {"type": ["string", "null"], "description": "The cursor of the next page; null on the last."},
        "images": {"type": "array", "items": {"type": "object", "required": ["id", "thumbnail"], "properties": {
            "id": {"type": "string", "format": "uuid"}, "filename": {"type": "string"},
            "thumbnail": {"type": "string"}, "added": {"type": ["string", "null"], "format": "date-time"}}}}}},
    "Mark": {"type": "object", "required": ["id", "result", "relevant", "model", "at"], "properties": {
        "id": {"type": "string", "format": "uuid", "description": "The mark's id (DELETE /feedback/{id})."},
        "result": {"type": "string", "format": "uuid", "description": "The marked result's id."},
        "relevant": {"type": "boolean"}, "model": {"type": "string"},
        "at": {"type": "string", "format": "date-time"}}},
    "Marks": {"type": "object", "required": ["marks", "next"], "properties": {
        "marks": {"type": "array", "items": {"$ref": "#/components/schemas/Mark"}},
        "next": {"type": ["string", "null"], "description": "Pass as 'after' for the next page; null on the last."}}},
    "Readiness": {"type": "object", "required": ["status", "checks"], "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "degraded": {"type": "object", "additionalProperties": {"type": "string"},
                     "description": "Parts not answering that searches do without (the gallery)."}}},
}


def openapi_document(settings: GatewaySettings | None = None, models: list[str] | None = None,
                     version: str = "0.1.0") -> dict[str, Any]:
    """The description for this gateway's settings and the models its embed server serves."""
    s = settings or GatewaySettings()
    served = list(models) if models else [s.default_model]
    setup = search_params.Setup.of(s, served)
    parameters = search_params.query_parameters(setup)
    search_responses = {"200": {"description": "Ranked results", "content": {_JSON: {
        "schema": {"$ref": "#/components/schemas/SearchResponse"}}}}, **_errors(*_BODY, *_ACCESS, 404, *_IMAGE, 503)}
    paths: dict[str, Any] = {
        "/search": {"post": {
            "summary": "Search by image (or text); JSON answer when the search ends or its time budget does.",
            "parameters": parameters,
            "requestBody": _search_body(setup),
            "responses": search_responses,
        }},
        "/search/stream": {"post": {
            "summary": "The same search as NDJSON progress events: caption, candidates, downloaded, ranked, final.",
            "parameters": parameters,
            "requestBody": _search_body(setup),
            "responses": {**search_responses, "200": {
                "description": "One JSON object a line; the last has event=final or event=error.",
                "content": {"application/x-ndjson": {}}}},
        }},
        "/analyze-attention": {"post": {
            "summary": "Patch-level correspondences between the query image and one candidate.",
            "parameters": [
                {"name": "candidate_url", "in": "query", "required": True,
                 "schema": {"type": "string", "minLength": 1},
                 "description": "The candidate image's http(s) URL; private and loopback addresses are refused."},
                search_params.model_parameter(setup),
                {"name": "include_visualizations", "in": "query", "schema": {"type": "boolean", "default": True}},
            ],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["query_file"],
                "properties": {"query_file": {"type": "string", "format": "binary"}}}}}},
            "responses": {"200": {"description": "Analysis", "content": {_JSON: {
                "schema": {"$ref": "#/components/schemas/AttentionResponse"}}}},
                **_errors(*_BODY, *_ACCESS, *_IMAGE, 502, 503)},
        }},
        "/models": {"get": {"summary": "Models the embed server serves.", "responses": {
            "200": {"description": "Models", "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Models"}}}},
            **_errors(*_ACCESS, 503)}}},
        "/health": {"get": {"summary": "The gateway process lives.", "responses": {
            "200": {"description": "Alive", "content": {_JSON: {"schema": {"type": "object"}}}}}}},
        "/ready": {"get": {"summary": "Both backends reachable and the default model ready.", "responses": {
            code: {"description": what, "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Readiness"}}}}
            for code, what in (("200", "Ready"), ("503", "Not ready"))}}},
        "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {
            "200": {"description": "Text format", "content": {"text/plain": {}}}}}},
        "/thumbnails/{token}": {"get": {
            "summary": "A result image, resized; only for links from a recent search result.",
            "parameters": [
                {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "size", "in": "query", "schema": {"type": "integer", "minimum": 16,
                                                            "maximum": s.thumbnail_max_side, "default": 256}}],
            "responses": {"200": {"description": "JPEG", "content": {"image/jpeg": {}}},
                          # 503: an uploaded original's storage does not answer now.
                          **_errors(400, *_ACCESS, 404, *_IMAGE, 502, 503)},
        }},
    }
    if s.gallery == "on":
        paths.update(_collection_paths(served, s.collection_max_files))
    if s.gallery == "on" and s.feedback == "on":  # else these routes answer 404 feedback_off
        paths.update(_feedback_paths())
    # Every reply, errors from the access checks included, names its request id.
    request_id = {REQUEST_ID_HEADER: {"required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                                      "description": "Sent by the client when well formed, else generated."}}
    for item in paths.values():
        for operation in item.values():
            # Any request may carry a body, and BodyLimitMiddleware refuses one over the limit
            # before the route is reached: a GET with a body too (access.py).
            operation["responses"].setdefault("413", _error("The request body is over the size limit "
                                                            "(GATEWAY_UPLOAD_MAX_BYTES)."))
            for response in operation["responses"].values():
                response["headers"] = request_id
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Tattoo search gateway", "version": version,
                 "description": "Visual search for tattoo designs: upload an image, get similar designs from the web."},
        "paths": paths,
        "components": {"schemas": _SCHEMAS},
    }
    if s.api_keys:
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
        for path, item in paths.items():
            if path not in ("/health", "/ready", "/metrics"):
                for operation in item.values():
                    operation["security"] = [{"apiKey": []}, {"bearer": []}]
                    # Two different keys (X-API-Key twice, or with another Bearer): access.caller_key.
                    operation["responses"].setdefault("400", {**_error(), "headers": request_id})
    return document


def _json_body(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _collection_paths(models: list[str], max_files: int) -> dict[str, Any]:
    """The private collections' routes (collection_routes.py); only with the gallery on."""
    name = {"name": "name", "in": "path", "required": True, "schema": _NAME_SCHEMA}
    image_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    gone = {"204": {"description": "Deleted"}}
    # 503: the gallery store does not answer now (retry).
    upload = {"type": "object", "properties": {
        # minItems: an empty list satisfies "required" yet sends no field at all (refused, 400).
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1, "maxItems": max_files,
                 "description": "Image files (each is added, a duplicate, or rejected with its reason)."},
        "url": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": max_files,
                "description": "Image URLs, fetched like web candidates (private addresses are refused)."},
        "tags": {"type": "string", "pattern": _UPLOAD_TAGS_PATTERN,
                 "description": f"Comma-separated tags for every image (at most {UPLOAD_MAX_TAGS}, 64 characters each)."},
        "embedding_model": {"type": "array", "items": {"type": "string", "enum": models},
                            "description": "The models to embed with; default: every model the embed server serves."},
    }, "anyOf": [{"required": ["file"]}, {"required": ["url"]}]}
    return {
        "/collections": {
            "get": {"summary": "The caller's collections (name, images, models, created, updated) and 'web'.",
                    "responses": {"200": _json_body("Collections", "Collections"), **_errors(*_ACCESS, 503)}},
            "post": {"summary": "Create a private collection of the caller's.",
                     "requestBody": {"required": True, "content": {_JSON: {"schema": {
                         "type": "object", "required": ["name"], "properties": {"name": _NAME_SCHEMA}}}}},
                     "responses": {"201": _json_body("Collection", "Created"),
                                   **_errors(*_BODY, *_ACCESS, 409, 503)}},
        },
        "/collections/{name}": {"delete": {
            "summary": "Delete a collection with its images (their originals too, when no other collection holds "
                       "them).",
            "parameters": [name], "responses": {**gone, **_errors(*_ACCESS, 404, 503)}}},
        "/collections/{name}/images": {"get": {
            "summary": "A page of the collection's images with signed thumbnail links, in a stable order; pass "
                       "the reply's 'next' as 'cursor' for the following page.",
            "parameters": [name,
                           {"name": "limit", "in": "query", "schema": {
                               "type": "integer", "minimum": 1, "maximum": PAGE, "default": LIST_DEFAULT}},
                           # The pattern, not just the format: an empty cursor= is refused (400).
                           {"name": "cursor", "in": "query", "schema": {
                               "type": "string", "format": "uuid", "pattern": f"^{CURSOR.pattern}$"},
                            "description": "The 'next' of the previous page, unchanged; leave it out for the first "
                                           "page (an empty one is 400)."}],
            "responses": {"200": _json_body("ImagePage", "One page of images"),
                          **_errors(*_ACCESS, 400, 404, 503)}}, "post": {
            "summary": f"Add images: any number of file and url fields (at most {max_files} in all); one entry "
                       "per input in order, one bad input never fails the others.",
            "parameters": [name],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": upload}}},
            "responses": {"200": _json_body("UploadResults", "One result per input"),
                          **_errors(*_BODY, *_ACCESS, 404, 503),
                          "413": _error(f"Over a limit, which the sentence names: more than {max_files} file and url "
                                        f"fields together (GATEWAY_COLLECTION_MAX_FILES), more than {max_files + TEXT_FIELDS} "
                                        "text fields, or a body over GATEWAY_COLLECTION_MAX_BYTES.")}}},
        "/collections/{name}/hashes": {"post": {
            "summary": "Which of these SHA-256 content hashes (of the uploaded file's bytes) the collection holds: "
                       "the bulk importer skips those files without uploading them.",
            "parameters": [name],
            "requestBody": {"required": True, "content": {_JSON: {"schema": {
                "type": "object", "required": ["sha256"], "properties": {"sha256": {
                    "type": "array", "maxItems": MAX_HASHES,
                    "items": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}}}}}}},
            "responses": {"200": {"description": "The hashes asked for that the collection holds", "content": {
                _JSON: {"schema": {"type": "object", "required": ["present"], "properties": {
                    "present": {"type": "array", "items": {"type": "string"}}}}}}},
                          **_errors(*_BODY, *_ACCESS, 404, 503)}}},
        "/collections/{name}/reindex": {"post": {
            "summary": "Embed the collection's stored originals with this model (one not indexed yet, or its new "
                       "weights) in the background: 202 at once, progress under 'index' in GET /collections; "
                       "409 while the same reindex runs, 429 when too many wait.",
            "parameters": [name, {"name": "embedding_model", "in": "query", "required": True,
                                  "schema": {"type": "string", "enum": models}}],
            "responses": {"202": _json_body("Reindex", "Accepted: the job is queued"),
                          **_errors(*_ACCESS, 400, 404, 409, 503)}}},
        # Issue 22: the public web points' colour facts, for points written before them.
        "/collections/web/reindex": {
            "post": {"summary": "Colour facts for the web points of this model's current space that have none: each "
                                "downloaded again from its latest URL (SSRF-guarded) in the background; 202 at once, "
                                "progress by GET on this path; resumable (asked again, it does what is left); a dead "
                                "URL is counted in 'skipped' and not tried again. 409 while it runs.",
                     "parameters": [{"name": "embedding_model", "in": "query", "required": True,
                                     "schema": {"type": "string", "enum": models}}],
                     "responses": {"202": _json_body("Reindex", "Accepted: the job is queued"),
                                   **_errors(*_ACCESS, 400, 404, 409, 503)}},
            "get": {"summary": "The web collection's colour backfill for this model: state, done, total, skipped.",
                    "parameters": [{"name": "embedding_model", "in": "query", "required": True,
                                    "schema": {"type": "string", "enum": models}}],
                    "responses": {"200": _json_body("Reindex", "The job's record"),
                                  **_errors(*_ACCESS, 400, 404, 503)}},
        },
        "/collections/{name}/images/{id}": {
            "get": {"summary": "An image's metadata and a signed thumbnail link.", "parameters": [name, image_id],
                    "responses": {"200": _json_body("CollectionImage", "The image"),
                                  **_errors(*_ACCESS, 404, 503)}},
            "delete": {"summary": "Remove an image from the collection.", "parameters": [name, image_id],
                       "responses": {**gone, **_errors(*_ACCESS, 404, 503)}},
        },
    }


def _feedback_paths() -> dict[str, Any]:
    """The stored feedback marks' routes (feedback_routes.py). 404 also when feedback is off
    (GATEWAY_FEEDBACK=off or the gallery off: error feedback_off)."""
    uuid = {"type": "string", "format": "uuid", "pattern": f"^{CURSOR.pattern}$"}
    return {
        "/feedback": {
            "post": {"summary": "Mark a result of one of your searches relevant or not (the same result for the "
                                "same query again replaces the mark). Later searches with a similar query move "
                                "results marked relevant up a little, not relevant down a little.",
                     "requestBody": {"required": True, "content": {_JSON: {"schema": {
                         "type": "object", "required": ["query_ref", "result", "relevant"], "properties": {
                             "query_ref": {"type": "string", "description": "The search reply's query_ref, unchanged."},
                             "result": {**uuid, "description": "The result's id."},
                             "relevant": {"type": "boolean"}}}}}},
                     "responses": {"201": _json_body("Mark", "Stored"),
                                   # 404: feedback off, an unknown (or another tenant's) query_ref, or a result the
                                   # caller cannot see; 409: the model's weights changed since the search, or the
                                   # tenant's marks are at GATEWAY_FEEDBACK_MAX_MARKS.
                                   **_errors(*_BODY, *_ACCESS, 404, 409, 503)}},
            "get": {"summary": "A page of your feedback marks, in a stable order.",
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                    "maximum": MARKS_MAX_PAGE, "default": 100}},
                        {"name": "after", "in": "query", "schema": {"type": "string", "pattern": "^[a-z0-9_-]+$"},
                         "description": "The 'next' of the previous page, unchanged."}],
                    "responses": {"200": _json_body("Marks", "One page of marks"),
                                  **_errors(*_ACCESS, 400, 404, 503)}},
            "delete": {"summary": "Delete all of your feedback marks.",
                       "responses": {"204": {"description": "Deleted"}, **_errors(*_ACCESS, 404, 503)}},
        },
        "/feedback/{id}": {"delete": {
            "summary": "Delete one of your feedback marks.",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": uuid}],
            "responses": {"204": {"description": "Deleted"}, **_errors(*_ACCESS, 404, 503)}}},
    }
