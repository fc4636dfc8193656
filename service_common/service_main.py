"""The one `main()` of the services' `python -m` entry points (embed_server, scraper_service,
search_gateway), each filling in its own parts.

What every service does the same way: settings from the environment first, a bad one
refused with a message that names the variable (exit status 2, no traceback: more useful
than one); logging set up from the settings only then; the service run until SIGINT or
SIGTERM, which stop it gracefully; a start that fails (a port in use, a certificate that
cannot be used) logged as "cannot start" with exit status 2. What differs (how a service
listens and stops, what it says once it listens) is the service's own.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from service_common.grpc_server import GrpcServer, serve, stop_requested

# The exit status of a service that could not start: a bad setting, a port in use.
CANNOT_START = 2

S = TypeVar("S", bound="LoggedSettings")


class LoggedSettings(Protocol):
    @property
    def log_level(self) -> str: ...


class CannotStart(Exception):
    """A service's start failed for a reason its message says (no traceback needed)."""


def print_settings_error(name: str, error: Exception) -> None:
    """A bad setting, said on stderr as one line before any logging is set up."""
    print(f"{name}: {error}", file=sys.stderr)


@dataclass(frozen=True)
class Service(Generic[S]):
    name: str  # the package, which names its logger and prefixes its messages
    load: Callable[[], S]  # the settings from the environment
    settings_errors: tuple[type[Exception], ...]  # what `load` raises for a bad setting
    log_format: Callable[[S], str]
    # Runs the service until it is stopped; its exit status.
    run: Callable[[S], int]
    # Errors of `run` that mean the service could not start (logged, exit status 2).
    start_errors: tuple[type[Exception], ...] = ()
    # How a bad setting is said (by default one line on stderr).
    settings_error: Callable[[str, Exception], None] = print_settings_error


def run_service(service: Service[S]) -> int:
    """The body of a service's `main()`: its exit status."""
    try:
        settings = service.load()
    except service.settings_errors as exc:
        service.settings_error(service.name, exc)
        return CANNOT_START
    logging.basicConfig(level=settings.log_level.upper(), format=service.log_format(settings))
    cannot_start: tuple[type[Exception], ...] = (CannotStart, *service.start_errors)
    try:
        return service.run(settings)
    except cannot_start as exc:
        logging.getLogger(service.name).error("cannot start: %s", exc)
        return CANNOT_START


async def serve_grpc(start: Callable[[], Awaitable[tuple[GrpcServer, int]]],
                     listening: Callable[[GrpcServer, int], None], grace_s: float, *,
                     start_errors: tuple[type[Exception], ...] = ()) -> None:
    """Start a gRPC server, say where it listens, and serve until SIGINT or SIGTERM, which
    stop it within ``grace_s`` (calls in flight finish). The signals are watched before it
    listens: a supervisor may signal as soon as it reads the address in the log.
    ``start_errors`` raised by ``start`` mean the service cannot start (CannotStart)."""
    stop = stop_requested()
    try:
        server, port = await start()
    except start_errors as exc:
        raise CannotStart(str(exc)) from exc
    listening(server, port)
    await serve(server, stop, grace_s)


def run_async(main: Callable[[S], Coroutine[Any, Any, None]]) -> Callable[[S], int]:
    """``main`` run on a new event loop until it returns (exit status 0)."""

    def run(settings: S) -> int:
        asyncio.run(main(settings))
        return 0

    return run
