"""Scraper service: streams candidate tattoo images for a text query over gRPC.

Run it with ``python -m scraper_service``; build it in code with
``scraper_service.server.create_server``.
"""

from __future__ import annotations
