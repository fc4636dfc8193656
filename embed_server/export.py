"""`python -m embed_server.export`: make the ONNX exports ahead of time.

Reads the same EMBED_* settings as the server (models, weights, precision, cache
folder) and fills EMBED_ONNX_CACHE_DIR, so a container image can ship its exports and
the server starts without exporting. Exits non-zero if any model fails.
"""

from __future__ import annotations

import logging
import sys

from embed_server.config import EmbedSettings, SettingsError


def main() -> int:
    try:
        settings = EmbedSettings.from_env()
    except SettingsError as exc:
        print(f"embed_server.export: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s %(message)s")
    from embed_server.model_pool import ServedModel
    from embed_server.models import CARDS
    from embed_server.runtimes.factory import resolve_runtime

    if resolve_runtime(settings) != "onnx":
        print("embed_server.export: nothing to export: the runtime is torch (install onnxruntime or set EMBED_RUNTIME=onnx)",
              file=sys.stderr)
        return 2
    failed = 0
    for name in settings.models:
        try:
            _, runtime = ServedModel(CARDS[name], settings)._build()
        except Exception as exc:  # noqa: BLE001 - report every model, then fail
            failed += 1
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            continue
        source = "already cached" if getattr(runtime, "exports_from_cache", False) else "exported"
        print(f"{name}: {source} ({runtime.precision}, {', '.join(runtime.providers)}) in {settings.onnx_cache_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
