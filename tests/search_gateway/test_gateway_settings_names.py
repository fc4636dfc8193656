"""A misspelt GATEWAY_* variable is refused at start with the name that was meant."""

from __future__ import annotations

import pytest

from search_gateway.config import ConfigError, GatewaySettings


def test_a_misspelt_setting_is_refused_naming_the_closest_valid_name() -> None:
    with pytest.raises(ConfigError) as error:
        GatewaySettings.from_env({"GATEWAY_EMBED_TARGT": "127.0.0.1:1", "GATEWAY_PORT": "0"})
    assert "GATEWAY_EMBED_TARGT (did you mean GATEWAY_EMBED_TARGET?)" in str(error.value)


def test_a_name_like_no_setting_is_refused_too() -> None:
    with pytest.raises(ConfigError, match=r"GATEWAY_FROBNICATE \(no setting has a similar name\)"):
        GatewaySettings.from_env({"GATEWAY_FROBNICATE": "1"})
