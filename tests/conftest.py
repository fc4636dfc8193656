"""Shared fixtures. Every server in the suite is real and listens on loopback, port 0."""

from __future__ import annotations

import os

# Offline always: a test that reached for the network would hang or flake in CI.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
