"""Revisited Oxford/Paris ground truth is a pickle: loading it must never run code."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from bench.quality.layouts import read_revisited
from bench.quality.safe_pickle import UnsafePickleError, load_restricted
from tests.quality.files import ROXFORD_GND, ROXFORD_IMLIST, ROXFORD_QIMLIST, revisited


class _Reduces:
    """Pickles as a call of `function(*arguments)`: what a hostile file does."""

    def __init__(self, function: object, *arguments: object) -> None:
        self.function, self.arguments = function, arguments

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.function, self.arguments


@pytest.mark.parametrize("call", ["os.system", "builtins.exec"])
def test_code_in_the_ground_truth_is_refused_and_never_runs(tmp_path: Path, call: str) -> None:
    marker = tmp_path / "ran"
    hostile = (_Reduces(os.system, f"touch {marker}") if call == "os.system"
               else _Reduces(builtins.exec, f"open({str(marker)!r}, 'w').close()"))
    gnd = [{**ROXFORD_GND[0], "easy": hostile}]
    path = revisited(tmp_path, gnd, ROXFORD_IMLIST, ROXFORD_QIMLIST)
    with pytest.raises(UnsafePickleError, match="refusing to load (posix|os|builtins|__builtin__)\\.(system|exec)"):
        read_revisited(path, "medium")
    assert not marker.exists()


def test_real_shaped_ground_truth_loads(tmp_path: Path) -> None:
    path = revisited(tmp_path, ROXFORD_GND, ROXFORD_IMLIST, ROXFORD_QIMLIST)
    assert load_restricted(path) == {"imlist": ROXFORD_IMLIST, "qimlist": ROXFORD_QIMLIST, "gnd": ROXFORD_GND}


def test_index_arrays_load_as_numpy(tmp_path: Path) -> None:
    # Some copies of the files carry the lists as numpy arrays; those constructors are allowed.
    gnd = [{"bbx": np.array([4.0, 2.0, 40.0, 30.0]), "easy": np.array([1]), "hard": np.array([3], dtype=np.int64),
            "junk": np.array([0])}]
    path = revisited(tmp_path, gnd, ROXFORD_IMLIST, ROXFORD_QIMLIST)
    query = read_revisited(path, "medium").queries[0]
    assert (query.relevant, query.ignore, query.image.box) == ({1, 3}, {0}, (4.0, 2.0, 40.0, 30.0))


def test_garbage_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "gnd_roxford5k.pkl"
    path.write_bytes(pickle.dumps({"imlist": []})[:-3])
    with pytest.raises(ValueError, match="not a readable pickle"):
        load_restricted(path)
