"""Shared fixtures. Every server in the suite is real and listens on loopback, port 0."""

from __future__ import annotations

import os

import pytest

# Offline always: a test that reached for the network would hang or flake in CI.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# The ONNX export tests of the embed server, marked slow here rather than in their files
# (another change is under way there): each exports a model to ONNX before it runs.
_SLOW_FILES = ("tests/embed_server/test_onnx.py", "tests/embed_server/test_export_command.py",
               "tests/embed_server/test_int8_static.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(_SLOW_FILES):
            item.add_marker(pytest.mark.slow)
