"""A service run as `python -m <service>` in a child process, one servicer method held at a gate.

`python -m tests.support.gated_service <service> <module>:<Class>.<method> <gate dir>`
patches the method so that each call first creates `<gate dir>/entered`, then waits until
`<gate dir>/release` exists, and then runs the service's `__main__` exactly as `python -m`
does. A test can so hold a real call in flight for as long as it needs (to signal the
process meanwhile, say) without guessing how long the call takes.

`GatedService` is the test's side: start, read the port from the log, wait for the gate,
release it, collect the exit code and the log.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import os
import re
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _gated(method: Callable[..., Any], gate: Path) -> Callable[..., Any]:
    entered, release = gate / "entered", gate / "release"

    async def wait() -> None:
        entered.touch()
        while not release.exists():
            await asyncio.sleep(0.01)

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def streaming(self: object, request: Any, context: Any) -> Any:
            await wait()
            async for response in method(self, request, context):
                yield response

        return streaming

    @functools.wraps(method)
    async def single(self: object, request: Any, context: Any) -> Any:
        await wait()
        return await method(self, request, context)

    return single


def _run(service: str, target: str, gate: str) -> None:
    module_name, _, qualname = target.partition(":")
    class_name, _, method_name = qualname.partition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    setattr(cls, method_name, _gated(getattr(cls, method_name), Path(gate)))
    runpy.run_module(service, run_name="__main__", alter_sys=True)


class GatedService:
    def __init__(self, service: str, target: str, env: Mapping[str, str], gate: Path) -> None:
        prefix = service.split("_")[0].upper() + "_"  # SCRAPER_, EMBED_: none from the shell
        clean = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
        self.gate = gate
        self.log: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.gated_service", service, target, str(gate)],
            cwd=REPO,
            env={**clean, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def port(self) -> int:
        """The port from the "listening on host:port" log line (0 if the process ended first)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line)
            found = re.search(r"listening on [^\s:]+:(\d+)", line)
            if found:
                return int(found.group(1))
        return 0

    def wait_entered(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if (self.gate / "entered").exists():
                return True
            time.sleep(0.01)
        return (self.gate / "entered").exists()

    def release(self) -> None:
        (self.gate / "release").touch()

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """The exit code and the whole log, once the process has ended."""
        output, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, "".join(self.log) + output

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


if __name__ == "__main__":
    _run(*sys.argv[1:4])
