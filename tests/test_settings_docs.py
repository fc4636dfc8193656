"""The README's settings tables say what the settings classes do: every field has a row
with its variable and default, and every row names a variable that exists."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from embed_server.config import EmbedSettings
from scraper_service.config import ScraperSettings
from search_gateway.config import GatewaySettings
from service_common.settings import ServiceSettings

README = Path(__file__).resolve().parents[1] / "README.md"
SETTINGS: list[type[ServiceSettings]] = [EmbedSettings, ScraperSettings, GatewaySettings]


def _prefix(settings_cls: type[ServiceSettings]) -> str:
    return str(settings_cls.model_config["env_prefix"])


def readme_tables(text: str) -> dict[str, list[tuple[str, str]]]:
    """Prefix -> (variable, default cell) per row, from the `## Settings` section, where each
    table sits under a heading naming its prefix: ``### Gateway (`GATEWAY_`)``."""
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, list[tuple[str, str]]] = {}
    prefix = None
    for line in section.splitlines():
        if line.startswith("#"):
            heading = re.search(r"\(`([A-Z]+_)`\)", line)
            prefix = heading.group(1) if heading else None
            continue
        if prefix is None or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        variable = re.fullmatch(r"`([A-Za-z0-9_]+)`", cells[0])
        if variable:  # not the header or the |---| line
            tables.setdefault(prefix, []).append((variable.group(1), cells[1] if len(cells) > 1 else ""))
    return tables


def matches(cell: str, default: object) -> bool:
    """Whether a README default cell states `default` (`5` and `5.0` alike)."""
    text = cell.replace("`", "").strip()
    if default is None:
        return text == "(none)"
    if default in ("", ()):
        return text == "(empty)"
    if isinstance(default, bool):
        return text == str(default).lower()
    if isinstance(default, (int, float)):
        try:
            return math.isclose(float(text), default)
        except ValueError:
            return False
    if isinstance(default, tuple):
        return text == ",".join(map(str, default))
    return text == str(default)


def _has_fixed_default(field: FieldInfo) -> bool:
    # A default computed on the machine (EMBED_THREADS: its cores) is described in words.
    return field.default_factory is None


@pytest.fixture(scope="module")
def tables() -> dict[str, list[tuple[str, str]]]:
    return readme_tables(README.read_text())


@pytest.mark.parametrize("settings_cls", SETTINGS, ids=_prefix)
def test_every_setting_has_a_row_with_its_variable_and_default(
    settings_cls: type[ServiceSettings], tables: dict[str, list[tuple[str, str]]]
) -> None:
    rows = dict(tables.get(_prefix(settings_cls), []))
    missing, wrong = [], []
    for name, variable in settings_cls.variables().items():
        field = settings_cls.model_fields[name]
        if variable not in rows:
            missing.append(variable)
        elif not rows[variable].strip():
            wrong.append(f"{variable}: no default given")
        elif _has_fixed_default(field) and not matches(rows[variable], field.default):
            wrong.append(f"{variable}: README says {rows[variable]}, the default is {field.default!r}")
    assert not missing, f"README.md has no row for {', '.join(missing)}"
    assert not wrong, "README.md states the wrong default: " + "; ".join(wrong)


@pytest.mark.parametrize("settings_cls", SETTINGS, ids=_prefix)
def test_every_row_names_a_setting_that_exists_once(
    settings_cls: type[ServiceSettings], tables: dict[str, list[tuple[str, str]]]
) -> None:
    rows = [variable for variable, _ in tables.get(_prefix(settings_cls), [])]
    known = set(settings_cls.variables().values())
    assert rows, f"README.md has no settings table headed (`{_prefix(settings_cls)}`)"
    assert [v for v in rows if v not in known] == [], "README.md documents variables that do not exist"
    assert sorted({v for v in rows if rows.count(v) > 1}) == [], "README.md documents a variable twice"


def test_the_parser_reads_rows_defaults_and_prefixes() -> None:
    text = "# x\n## Settings\n### A (`A_`)\n| variable | default | meaning |\n|---|---|---|\n" \
           "| `A_ONE` | `5` | one |\n| `A_TWO` | (none) | two |\n## Next\n| `A_THREE` | 3 | not here |\n"
    assert readme_tables(text) == {"A_": [("A_ONE", "`5`"), ("A_TWO", "(none)")]}
    assert matches("`5`", 5.0) and matches("(none)", None) and matches("(empty)", ())
    assert matches("`a,b`", ("a", "b")) and matches("`false`", False) and not matches("`6`", 5)
