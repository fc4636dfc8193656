"""The services' shared `main()` skeleton (service_common/service_main.py): a bad setting and a
failed start end with exit status 2 and one line saying why; otherwise the service's own status."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from service_common.service_main import CANNOT_START, CannotStart, Service, run_service


@dataclass
class _Settings:
    log_level: str = "info"


class _Bad(ValueError):
    pass


def _load_bad() -> _Settings:
    raise _Bad("DEMO_PORT='x' is not a whole number")


def test_a_bad_setting_is_one_line_on_stderr_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    ran: list[_Settings] = []
    service = Service("demo", _load_bad, (_Bad,), log_format=lambda _: "%(message)s",
                      run=lambda s: ran.append(s) or 0)
    assert run_service(service) == CANNOT_START
    assert capsys.readouterr().err == "demo: DEMO_PORT='x' is not a whole number\n" and not ran


def test_the_run_gives_the_exit_status_and_a_failed_start_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert run_service(Service("demo", _Settings, (_Bad,), log_format=lambda _: "%(message)s", run=lambda _: 3)) == 3

    def busy(_: _Settings) -> int:
        raise OSError("port in use")

    def refused(_: _Settings) -> int:
        raise CannotStart("certificate unusable")

    with caplog.at_level(logging.ERROR, logger="demo"):
        assert run_service(Service("demo", _Settings, (_Bad,), log_format=lambda _: "%(message)s", run=busy,
                                   start_errors=(OSError,))) == CANNOT_START
        assert run_service(Service("demo", _Settings, (_Bad,), log_format=lambda _: "%(message)s",
                                   run=refused)) == CANNOT_START
    assert [r.getMessage() for r in caplog.records if r.name == "demo"] == [
        "cannot start: port in use", "cannot start: certificate unusable"]
    with pytest.raises(OSError):  # not a start error of this service: a traceback, as before
        run_service(Service("demo", _Settings, (_Bad,), log_format=lambda _: "%(message)s", run=busy))
