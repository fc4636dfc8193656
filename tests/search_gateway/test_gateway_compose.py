"""compose.yaml against the Compose Specification's JSON schema (vendored: docker/compose_spec.json,
from the docker-compose 1.29.2 package on PyPI; no Docker engine or compose plugin runs here)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads((ROOT / "docker" / "compose_spec.json").read_text())
    jsonschema.validate(_compose(), schema)


def test_compose_wires_three_healthy_services_and_every_embed_replica() -> None:
    doc = _compose()
    services = doc["services"]
    assert set(services) == {"embed-server", "scraper", "gateway"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        assert (ROOT / service["build"]["dockerfile"]).is_file()
    embed = services["embed-server"]
    assert embed["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "replicas" in embed["deploy"]
    env = services["gateway"]["environment"]
    assert env["GATEWAY_EMBED_TARGET"] == "dns:///embed-server:50051"  # DNS: every replica, round robin
    assert services["gateway"]["depends_on"]["embed-server"]["condition"] == "service_healthy"
    assert ".[embed,gpu]" in (ROOT / "docker" / "embed-server.Dockerfile").read_text()
    assert "torch" not in (ROOT / "docker" / "gateway.Dockerfile").read_text().split("no torch", 1)[1]
