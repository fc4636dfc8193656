"""The OpenAPI description of the HTTP API, written by hand to match routes.py."""

from __future__ import annotations

from typing import Any

_MODEL = {"name": "embedding_model", "in": "query", "schema": {"type": "string",
          "enum": ["clip", "dinov2", "dinov2-reg", "dinov3", "siglip"], "default": "clip"}}
_ERROR = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ERRORS = {str(code): _ERROR for code in (400, 401, 413, 415, 422, 429, 503)}

_SEARCH_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary", "description": "The query image."},
        "text": {"type": "string", "description": "Instead of file: a text query (clip, siglip)."},
    }}}},
}
_SEARCH_PARAMS = [
    _MODEL,
    {"name": "include_patch_attention", "in": "query", "schema": {"type": "boolean", "default": False}},
    {"name": "max_results", "in": "query", "schema": {"type": "integer", "minimum": 1}},
]


def openapi_document(version: str = "0.1.0") -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tattoo search gateway", "version": version,
                 "description": "Visual search for tattoo designs: upload an image, get similar designs from the web."},
        "paths": {
            "/search": {"post": {
                "summary": "Search by image (or text); JSON answer when the search ends or its time budget does.",
                "parameters": _SEARCH_PARAMS, "requestBody": _SEARCH_BODY,
                "responses": {"200": {"description": "Ranked results", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/SearchResponse"}}}}, **_ERRORS},
            }},
            "/search/stream": {"post": {
                "summary": "The same search as NDJSON progress events: caption, candidates, downloaded, ranked, final.",
                "parameters": _SEARCH_PARAMS, "requestBody": _SEARCH_BODY,
                "responses": {"200": {"description": "One JSON object a line; the last has event=final or event=error.",
                                      "content": {"application/x-ndjson": {}}}, **_ERRORS},
            }},
            "/analyze-attention": {"post": {
                "summary": "Patch-level correspondences between the query image and one candidate.",
                "parameters": [
                    {"name": "candidate_url", "in": "query", "required": True, "schema": {"type": "string"}},
                    _MODEL,
                    {"name": "include_visualizations", "in": "query", "schema": {"type": "boolean", "default": True}},
                ],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "properties": {"query_file": {"type": "string", "format": "binary"}}}}}},
                "responses": {"200": {"description": "Analysis", "content": {"application/json": {}}},
                              "502": _ERROR, **_ERRORS},
            }},
            "/models": {"get": {"summary": "Models the embed server serves.", "responses": {"200": {"description": "Models"}, "503": _ERROR}}},
            "/health": {"get": {"summary": "The gateway process lives.", "responses": {"200": {"description": "Alive"}}}},
            "/ready": {"get": {"summary": "Both backends reachable and the default model ready.",
                               "responses": {"200": {"description": "Ready"}, "503": _ERROR}}},
            "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {"200": {"description": "Text format"}}}},
            "/thumbnails/{token}": {"get": {
                "summary": "A result image, resized; only for links from a recent search result.",
                "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "size", "in": "query", "schema": {"type": "integer", "default": 256}}],
                "responses": {"200": {"description": "JPEG", "content": {"image/jpeg": {}}}, "404": _ERROR, "502": _ERROR},
            }},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error", "detail"], "properties": {
                "error": {"type": "string"}, "detail": {"type": "string"}}},
            "SearchResult": {"type": "object", "required": ["url", "score"], "properties": {
                "url": {"type": "string"}, "source_url": {"type": "string"}, "platform": {"type": "string"},
                "title": {"type": "string"}, "engine": {"type": "string"}, "score": {"type": "number"},
                "thumbnail_url": {"type": "string"},
                "patch_attention": {"type": "object", "properties": {
                    "overall_similarity": {"type": "number"}, "query_grid_size": {"type": "integer"},
                    "candidate_grid_size": {"type": "integer"}, "attention_summary": {"type": "object"}}},
            }},
            "SearchResponse": {"type": "object", "required": ["caption", "results", "embedding_model"], "properties": {
                "caption": {"type": "string"},
                "results": {"type": "array", "items": {"$ref": "#/components/schemas/SearchResult"}},
                "embedding_model": {"type": "string"}, "patch_attention_enabled": {"type": "boolean"},
                "partial": {"type": "boolean"}, "stats": {"type": "object"}, "timings": {"type": "object"},
            }},
        }},
    }
