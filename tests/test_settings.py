"""What the three services' settings share (service_common/settings.py): one error
sentence, blank means default, unknown names refused in any case, checks on every path in."""

from __future__ import annotations

import re
from typing import Any

import pytest

from embed_server.config import EmbedSettings
from scraper_service.config import ScraperSettings
from search_gateway.config import GatewaySettings
from service_common.settings import ServiceSettings, SettingsError


@pytest.mark.parametrize(
    ("settings_cls", "env", "message"),
    [
        (EmbedSettings, {"EMBED_MAX_BATCH_SIZE": "0"}, "EMBED_MAX_BATCH_SIZE='0' must be at least 1"),
        (ScraperSettings, {"SCRAPER_WORKERS": "0"}, "SCRAPER_WORKERS='0' must be at least 1"),
        (GatewaySettings, {"GATEWAY_EMBED_BATCH": "0"}, "GATEWAY_EMBED_BATCH='0' must be at least 1"),
        (ScraperSettings, {"SCRAPER_PORT": "fifty"}, "SCRAPER_PORT='fifty' is not a whole number"),
        (GatewaySettings, {"GATEWAY_CAPTION_MODE": "online"},
         "GATEWAY_CAPTION_MODE='online' is not one of offline, remote, none"),
        # "nan" passes every comparison, so it would pass every bound unnoticed.
        (EmbedSettings, {"EMBED_MAX_QUEUE_DELAY_MS": "nan"}, "EMBED_MAX_QUEUE_DELAY_MS='nan' is not a finite number"),
    ],
)
def test_a_bad_value_reads_the_same_in_every_service(
    settings_cls: type[ServiceSettings], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=f"^{re.escape(message)}$"):
        settings_cls.from_env(env)


def test_a_blank_value_means_the_default_in_every_service() -> None:
    # Compose passes `${GATEWAY_PORT:-}` as an empty or blank string.
    assert GatewaySettings.from_env({"GATEWAY_PORT": " ", "GATEWAY_API_KEYS": ""}).port == 8000
    assert ScraperSettings.from_env({"SCRAPER_PORT": " "}).port == 50052
    assert EmbedSettings.from_env({"EMBED_PORT": " "}).port == 50051


def test_an_unknown_name_is_refused_whatever_its_case() -> None:
    # Names are read without regard to case, so a misspelt lower-case one is a typo too.
    with pytest.raises(SettingsError, match=re.escape("gateway_serch_budget_s (did you mean GATEWAY_SEARCH_BUDGET_S?)")):
        GatewaySettings.from_env({"gateway_serch_budget_s": "1"})


def test_settings_built_in_code_are_checked_and_named_like_variables() -> None:
    with pytest.raises(SettingsError, match=re.escape("EMBED_MAX_BATCH_SIZE='0' must be at least 1")):
        EmbedSettings(max_batch_size=0)
    with pytest.raises(SettingsError, match=re.escape("SCRAPER_WORKERS='65' must be at most 64")):
        ScraperSettings().replace(workers=65)
    unknown: dict[str, Any] = {"frobnicate": 1}  # as a caller without type checking could pass it
    with pytest.raises(SettingsError, match=re.escape("SCRAPER_FROBNICATE='1' is not a setting")):
        ScraperSettings(**unknown)
    # replace() checks the rules between settings again, too.
    with pytest.raises(SettingsError, match="SCRAPER_CATALOG must be set"):
        ScraperSettings().replace(engines=("catalog",))


def test_only_from_env_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings built in code (tests, embedding) must not change with the shell they run in.
    monkeypatch.setenv("EMBED_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("EMBED_MAX_QUEUE_SIZE", "256")
    assert EmbedSettings().max_batch_size == 8
    assert EmbedSettings.from_env().max_batch_size == 16


def test_an_error_never_prints_a_secret_value() -> None:
    # Start-up errors reach logs: the value of a key, token or secret is hidden, others shown.
    with pytest.raises(SettingsError) as refused:
        GatewaySettings.from_env({"GATEWAY_API_KEYS": "studio:k-1,Bad Tenant:supersecret"})
    assert "GATEWAY_API_KEYS=(hidden)" in str(refused.value) and "supersecret" not in str(refused.value)
    with pytest.raises(SettingsError) as refused:
        GatewaySettings.from_env({"GATEWAY_RATE_LIMIT_PER_MINUTE": "x"})
    assert "GATEWAY_RATE_LIMIT_PER_MINUTE='x'" in str(refused.value)
