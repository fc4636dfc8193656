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
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from tests.support.background import BackgroundServer
from tests.support.gateway_stack import Site, gateway_settings
from tests.support.gateway_support import RunningGateway, run_gateway, scraper_server, write_catalog
from tests.support.openapi_fuzz import CHECKS, EXAMPLES_PER_OPERATION

# Slow: schemathesis fuzzes every operation (make test-fast leaves it out).
pytestmark = pytest.mark.slow


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
