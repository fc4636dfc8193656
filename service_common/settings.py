"""One way for every service to read its settings: a frozen pydantic-settings class per
service (`EmbedSettings`, `ScraperSettings`, `GatewaySettings`), each field read from the
service's prefixed variable (`max_batch_size` from `EMBED_MAX_BATCH_SIZE`).

What this module adds to pydantic-settings, and why:
- Unknown prefixed variables are refused, naming the closest valid name. pydantic-settings
  ignores them even with `extra="forbid"` (pydantic/pydantic-settings#985), and a misspelt
  name would do nothing, silently (`EMBED_MAX_BATCH=32` leaves the batch at 8).
- One error sentence. A bad value reads `EMBED_MAX_BATCH_SIZE='0' must be at least 1`: the
  variable, the value as given, what it must be. A rule between settings names both
  (`EMBED_ARCHITECTURE=tiny needs EMBED_WEIGHTS=random`). Every failure is `SettingsError`.
- Comma-separated lists (`CommaList`): pydantic-settings would read a tuple as JSON.
- Empty or blank variables mean the default, as compose files pass `${VAR:-}`.
- Constructing a class in code reads no environment: tests and embedding code get exactly
  the values they pass, whatever the shell holds. `from_env()` is the one way in from
  variables (`os.environ`, or a mapping in tests).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any, Self, TypeVar

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class SettingsError(ValueError):
    """A setting is unknown, malformed or out of range; the message names the variable."""


# --- value shapes shared by the services


def _split_commas(value: object) -> object:
    # From the environment a list is one string; from code it is already a sequence.
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _lower(value: object) -> object:
    # A string, or each string of a list given in code.
    if isinstance(value, (tuple, list)):
        return tuple(item.lower() if isinstance(item, str) else item for item in value)
    return value.lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


T = TypeVar("T")
# `a, b,c` -> ("a", "b", "c"), blanks dropped: `CommaList[str]`, `CommaList[Engine]`.
# NoDecode stops pydantic-settings from reading the variable as JSON first.
CommaList = Annotated[tuple[T, ...], NoDecode, BeforeValidator(_split_commas)]
# Choices read case-insensitively (`EMBED_RUNTIME=ONNX`, `SCRAPER_ENGINES=DuckDuckGo`).
Lower = BeforeValidator(_lower)
Upper = BeforeValidator(_upper)
# A count of at least one: pydantic's PositiveInt would word its error "more than 0".
AtLeastOne = Annotated[int, Field(ge=1)]


# --- unknown variables


def unknown_variables(environ: Mapping[str, str], prefix: str, known: Collection[str]) -> list[str]:
    """Variables starting with `prefix` (in any case) that name no setting, sorted."""
    prefix_folded = prefix.casefold()
    known_folded = {name.casefold() for name in known}
    return sorted(
        key for key in environ if key.casefold().startswith(prefix_folded) and key.casefold() not in known_folded
    )


def unknown_variables_message(environ: Mapping[str, str], prefix: str, known: Collection[str]) -> str | None:
    """One sentence naming every unknown `prefix*` variable and the closest valid name,
    or None when there is none."""
    unknown = unknown_variables(environ, prefix, known)
    if not unknown:
        return None
    # Compared without the prefix, which every name shares and which would otherwise make
    # any two names look alike.
    suffixes = {name[len(prefix):]: name for name in sorted(known)}
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key[len(prefix):].upper(), list(suffixes), n=1, cutoff=0.6)
        parts.append(f"{key} (did you mean {suffixes[close[0]]}?)" if close else f"{key} (no setting has a similar name)")
    noun = "setting" if len(unknown) == 1 else "settings"
    return f"unknown {noun}: {'; '.join(parts)}; correct or unset it"


class StrictEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping, refusing unknown
    prefixed variables and treating blank values as unset."""

    def __init__(self, settings_cls: type[ServiceSettings], environ: Mapping[str, str]) -> None:
        # Set before the base class reads the variables (it does so in __init__).
        self._environ = environ
        super().__init__(settings_cls)
        message = unknown_variables_message(environ, self.env_prefix, settings_cls.variables().values())
        if message is not None:
            raise SettingsError(message)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Names are matched without regard to case, as pydantic-settings does by default.
        return {
            (key if self.case_sensitive else key.lower()): value.strip()
            for key, value in self._environ.items()
            if value.strip()
        }


# --- the base class


class ServiceSettings(BaseSettings):
    """A service's settings: subclasses declare fields and `env_prefix`, nothing else."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        case_sensitive=False,
        str_strip_whitespace=True,
        # "nan" and "inf" parse as floats and pass every bound check unnoticed.
        allow_inf_nan=False,
        validate_default=True,
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(describe(exc, type(self))) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the caller passes: from_env() reads the environment explicitly.
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Settings from the prefixed variables of `environ` (`os.environ` by default);
        `SettingsError` names the first bad or unknown variable."""
        values = StrictEnvSource(cls, os.environ if environ is None else environ)()
        return cls(**values)

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Field name -> its variable (`max_batch_size` -> `EMBED_MAX_BATCH_SIZE`)."""
        prefix = cls.model_config.get("env_prefix", "")
        return {name: f"{prefix}{name}".upper() for name in cls.model_fields}

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed, checked again like a new instance."""
        return type(self)(**{**self.model_dump(), **changes})


# --- the error sentence


def shown(value: object) -> str:
    """A value as a person would have typed it into the variable, quoted."""
    if isinstance(value, (tuple, list)):
        value = ",".join(str(item) for item in value)
    return repr(value if isinstance(value, str) else str(value))


def _number(bound: object) -> object:
    # A float bound that is whole reads as people write it: "more than 0", not "0.0".
    return int(bound) if isinstance(bound, float) and bound.is_integer() else bound


_PREDICATES: dict[str, Callable[[dict[str, Any]], str]] = {
    "greater_than_equal": lambda ctx: f"must be at least {_number(ctx['ge'])}",
    "greater_than": lambda ctx: f"must be more than {_number(ctx['gt'])}",
    "less_than_equal": lambda ctx: f"must be at most {_number(ctx['le'])}",
    "less_than": lambda ctx: f"must be less than {_number(ctx['lt'])}",
    "int_parsing": lambda ctx: "is not a whole number",
    "int_from_float": lambda ctx: "is not a whole number",
    "int_type": lambda ctx: "is not a whole number",
    "float_parsing": lambda ctx: "is not a number",
    "float_type": lambda ctx: "is not a number",
    "finite_number": lambda ctx: "is not a finite number",
    "bool_parsing": lambda ctx: "is not true or false",
    "bool_type": lambda ctx: "is not true or false",
    "literal_error": lambda ctx: "is not one of " + ", ".join(re.findall(r"'([^']*)'", ctx["expected"])),
    "string_too_short": lambda ctx: "must not be empty",
    "too_short": lambda ctx: "must not be empty" if ctx["min_length"] == 1 else f"must list at least {ctx['min_length']}",
    "extra_forbidden": lambda ctx: "is not a setting",
    # Our own validators word their ValueError as what follows the value.
    "value_error": lambda ctx: str(ctx["error"]),
}


def describe(error: ValidationError, settings_cls: type[ServiceSettings]) -> str:
    """pydantic's errors as our sentences, one per problem, joined by '; '."""
    variables = settings_cls.variables()
    prefix = settings_cls.model_config.get("env_prefix", "")
    sentences = []
    for problem in error.errors():
        worded = _PREDICATES.get(problem["type"])
        predicate = worded(problem.get("ctx", {})) if worded else f"is not valid: {problem['msg']}"
        if not problem["loc"]:
            # A rule between settings (a model validator): its sentence names them itself.
            sentences.append(predicate)
            continue
        field = str(problem["loc"][0])
        variable = variables.get(field, f"{prefix}{field}".upper())
        value = "(hidden)" if is_secret(settings_cls, field) else shown(problem["input"])
        sentences.append(f"{variable}={value} {predicate}")
    return "; ".join(sentences)


_SECRET_NAME = re.compile(r"(^|_)(keys?|secret|token|password|credentials?)($|_)")


def is_secret(settings_cls: type[ServiceSettings], field: str) -> bool:
    """Whether a field holds a secret, whose value an error must never print (errors
    reach logs): a SecretStr field, or one named like a key, secret, token or password."""
    info = settings_cls.model_fields.get(field)
    if info is not None and "SecretStr" in repr(info.annotation):
        return True
    # A key's file or folder is where the secret lies, not the secret: its path may show.
    return bool(_SECRET_NAME.search(field)) and not field.endswith(("_file", "_path", "_dir"))
