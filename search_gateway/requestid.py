"""One id per request: accepted from the client when well formed, else generated.

It travels in a context variable, so every log line written while the request runs
carries it (``record.request_id``), and it is echoed in the ``X-Request-ID`` header of
every reply and in the body of every JSON error: a user who quotes it lets an operator
find the log line with the full detail that the reply leaves out.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets

HEADER = "X-Request-ID"
# Anything else a client sends is replaced: the id is written into logs and headers,
# so it must not carry spaces, quotes, control characters or unbounded length.
_WELL_FORMED = re.compile(r"[A-Za-z0-9._-]{1,64}")

_current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def current() -> str:
    """The id of the request being served, or "-" outside one."""
    return _current.get()


def bind(request_id: str) -> contextvars.Token[str]:
    """Make ``request_id`` the current one until :func:`unbind` (the HTTP middleware,
    http/request_ids.py, around each request)."""
    return _current.set(request_id)


def unbind(token: contextvars.Token[str]) -> None:
    _current.reset(token)


def new_id() -> str:
    return secrets.token_hex(8)


def accept(raw: str | None) -> str:
    """The client's id when it is well formed, else a fresh one."""
    if raw is not None and _WELL_FORMED.fullmatch(raw):
        return raw
    return new_id()


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id``, so a format can say ``%(request_id)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _current.get()
        return True


_installed = False


def install_log_stamp() -> None:
    """Stamp every log record at creation, whatever logger or handler it goes to.

    A filter on a logger sees only that logger's own records, not its children's,
    and a filter on a handler misses handlers added later (a test's log capture, a
    reconfigured root); stamping in the record factory covers them all. Idempotent.
    """
    global _installed
    if _installed:
        return
    stamp = RequestIdFilter()
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        stamp.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
