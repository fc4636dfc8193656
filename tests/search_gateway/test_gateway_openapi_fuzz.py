"""Schema-driven fuzzing: every operation in /openapi.json against the real gateway and backends.

schemathesis generates requests from the description the gateway serves (valid ones
and ones that break the schema), sends them over real HTTP, and checks each reply:
never a 5xx, only documented statuses, documented content types, documented headers
(the request id) and bodies that match their schema. The run is derandomized and the
number of examples per operation fixed, so it is reproducible and bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.search_gateway.conftest import Site, gateway_settings
from tests.search_gateway.gateway_support import RunningGateway, run_gateway, scraper_server, write_catalog
from tests.support.background import BackgroundServer

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


@pytest_asyncio.fixture
async def gateway(embed: BackgroundServer, site: Site, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    # A few good candidates only: a fuzzed text search then costs a fraction of a second.
    catalog = write_catalog(tmp_path / "catalog.jsonl", site.good_urls(3))
    with scraper_server(catalog) as scraper:
        # rate_limit_per_minute=0 (gateway_settings' default): hundreds of quick requests.
        async with run_gateway(gateway_settings(embed.target, scraper.target, site)) as gw:
            yield gw


def _fuzz(document: dict[str, Any], base_url: str) -> list[str]:
    schema = schemathesis.openapi.from_dict(document)
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

        @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=base_url, timeout=30)
            case.validate_response(response, checks=CHECKS)

        run()
        tested.append(operation.label)
    return tested


async def test_every_operation_answers_as_its_description_says(gateway: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/openapi.json") as resp:
        assert resp.status == 200
        document = await resp.json()
    # The enum names what the embed server serves (clip, dinov2), not every known model.
    search_params = document["paths"]["/search"]["post"]["parameters"]
    assert next(p for p in search_params if p["name"] == "embedding_model")["schema"]["enum"] == ["clip", "dinov2"]
    # The gateway keeps serving on this loop while the synchronous fuzzer runs in a thread.
    tested = await asyncio.to_thread(_fuzz, document, gateway.url)
    assert len(tested) == sum(len(item) for item in document["paths"].values())
