"""The checks of the schemathesis fuzz of the OpenAPI description, shared by the fuzz of
the search routes and that of the collection routes."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES_PER_OPERATION = 20


# Refusals no schema can foresee: a text search with a model that has no text tower,
# bytes that are not a usable image, a URL whose address is private or whose image
# cannot be fetched, a thumbnail link the gateway never signed, rerank=true with a text query.
UNDESCRIBABLE = frozenset({"no_text_tower", "rerank_needs_image", "empty_image", "not_an_image", "truncated_image",
                           "too_many_pixels", "bad_image", "url_refused", "download_failed", "not_found"})


def valid_requests_are_accepted(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """A request the description calls valid is refused only for a reason it cannot describe.

    Otherwise the description is looser than the API (a limit or an enum it does not state).
    """
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code < 400:
        return
    body = response.json() if response.headers.get("content-type", [""])[0].startswith("application/json") else {}
    error = body.get("error") if isinstance(body, dict) else None
    assert error in UNDESCRIBABLE, f"a valid request was refused: {response.status_code} {body}"


# negative_data_rejection: a request the description calls invalid is refused (4xx), so the
# description is no stricter than the API (an empty cursor= was read as no cursor). Last:
# valid_requests_are_accepted (test_gateway_collections replaces it with its own).
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, valid_requests_are_accepted]
