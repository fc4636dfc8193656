"""Tiny benchmark files in each published layout, written by the tests themselves."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from tests.support.images import jpeg


def image(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg(seed, size))
    return path


def revisited(root: Path, gnd: list[dict[str, Any]], imlist: list[str], qimlist: list[str]) -> Path:
    """`gnd_roxford5k.pkl` and `jpg/` as revisitop lays them out; returns the pickle's path."""
    for seed, name in enumerate([*imlist, *qimlist]):
        image(root / "jpg" / f"{name}.jpg", seed, (64, 48))
    path = root / "gnd_roxford5k.pkl"
    path.write_bytes(pickle.dumps({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, protocol=2))
    return path


# One query over five database images: easy [1], hard [3], junk [0].
ROXFORD_GND = [{"bbx": [4.0, 2.0, 40.0, 30.0], "easy": [1], "hard": [3], "junk": [0]}]
ROXFORD_IMLIST = ["all_souls_000001", "all_souls_000002", "radcliffe_000003", "ashmolean_000004", "magdalen_000005"]
ROXFORD_QIMLIST = ["all_souls_000013"]
