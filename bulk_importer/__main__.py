"""``python -m bulk_importer PATH... --collection NAME [--gateway URL] [--create]``.

The API key comes from ``TATTOO_API_KEY`` (sent as ``X-API-Key``), the gateway's URL
from ``--gateway`` or ``TATTOO_GATEWAY_URL``. Exit status: 0 when every input was
added, a duplicate, skipped or rejected; 1 when some failed (run again to send them),
also when the gateway could not be reached for ``--give-up-after`` seconds: then every
input not yet answered is reported failed and nothing more is sent; 2 when the import
could not start (bad arguments, key or collection).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path

import aiohttp
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs shipped

from bulk_importer.client import GatewayClient, GaveUp, Refused, Retry, Unreachable
from bulk_importer.pipeline import Importer, Limits, count
from bulk_importer.report import Report

API_KEY_ENV = "TATTOO_API_KEY"
GATEWAY_ENV = "TATTOO_GATEWAY_URL"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bulk_importer",
                                description="Import folders, image files or URL lists (.txt: one URL a line) "
                                            "into a private collection of a tattoo search gateway.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--collection", required=True)
    p.add_argument("--gateway", default=os.environ.get(GATEWAY_ENV, "http://127.0.0.1:8000"),
                   help=f"the gateway's base URL (default: ${GATEWAY_ENV} or http://127.0.0.1:8000)")
    p.add_argument("--create", action="store_true", help="create the collection if it does not exist")
    p.add_argument("--report", type=Path, help="JSON Lines report (default: ./import-<collection>-<time>.jsonl)")
    p.add_argument("--batch-files", type=int, default=32, help="files per upload request (lowered by a 413)")
    p.add_argument("--batch-mb", type=float, default=16.0, help="MB per upload request (lowered by a 413)")
    p.add_argument("--concurrency", type=int, default=4, help="upload requests in flight")
    p.add_argument("--retries", type=int, default=8, help="retries of a request on 429/502/503/504 or a lost "
                                                          "connection, with back-off")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--give-up-after", type=float, default=60.0, metavar="SECONDS",
                   help="stop sending once the gateway has not been reached for this long (connection "
                        "errors, timeouts, 502/503/504), reporting every input left as failed (default: 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


async def _main(args: argparse.Namespace) -> int:
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {missing[0]}", file=sys.stderr)
        return 2
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    report = Report(args.report or Path.cwd() / f"import-{args.collection}-{stamp}.jsonl")
    key = os.environ.get(API_KEY_ENV)
    headers = {"X-API-Key": key} if key else {}
    timeout = aiohttp.ClientTimeout(total=args.timeout, sock_connect=10)
    bar = tqdm(unit="img", disable=args.no_progress or None, dynamic_ncols=True, desc=args.collection)
    report.on_record = lambda: bar.update(1)
    counting = asyncio.create_task(asyncio.to_thread(count, args.paths))
    counting.add_done_callback(lambda t: _set_total(bar, t))
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            retry = Retry(attempts=max(0, args.retries), give_up_s=max(0.0, args.give_up_after))
            client = GatewayClient(http, args.gateway, args.collection, retry)
            try:
                await client.ensure_collection(args.create)
            except Unreachable:
                pass  # the run goes on without sending, so that every input is reported failed
            except (Refused, GaveUp) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            limits = Limits(max(1, args.batch_files), max(1, int(args.batch_mb * 1024 * 1024)))
            await Importer(client, report, limits, concurrency=max(1, args.concurrency)).run(args.paths)
    finally:
        counting.cancel()
        bar.close()
        report.close()
    print(report.summary(), file=sys.stderr)
    if client.gone is not None:
        print(f"error: stopped sending: the gateway at {args.gateway} could not be reached for "
              f"{retry.give_up_s:g} s; the {report.counts['failed']} inputs reported failed are the ones "
              "to send: run the same command again once it is back.", file=sys.stderr)
    return 1 if report.counts["failed"] or client.gone is not None else 0


def _set_total(bar: tqdm, task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is None:
        bar.total = task.result()
        bar.refresh()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        print("interrupted: run the same command again to send the rest", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
