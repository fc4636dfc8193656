"""Loading pickles of data (numpy arrays, dicts, lists) without running their code.

Two kinds of file arrive as pickles: SqueezeNet's weights in the `ndf` package, and the
Revisited Oxford/Paris ground truth (`gnd_roxford5k.pkl`, `gnd_rparis6k.pkl`) that the
quality benchmark reads. A pickle is a program: a plain `pickle.load` runs whatever
callable it names. This unpickler resolves no global but a short list of numpy array
constructors; a file naming anything else, `os.system` included, is refused before any
of it runs. Dicts, lists, tuples, strings and numbers need no globals at all.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import pickle
from pathlib import Path
from typing import Any

# (module, name) pairs a ground-truth file may name. numpy moved `core` to `_core` in
# 2.0; pickles written by either spell one or the other.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Protocol 2 (Python 2 era) spells bytes, e.g. an array's buffer, as this call;
        # it turns a str into bytes and nothing else.
        ("_codecs", "encode"),
    }
)


class UnsafePickleError(ValueError):
    """The file names a callable outside the allow-list: it was not loaded."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: io.BytesIO, what: str) -> None:
        super().__init__(data, encoding="latin1")
        self.what = what

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: {self.what}, so this pickle would run code; it was not loaded"
            )
        # numpy 2 keeps `numpy.core` as a deprecated alias of `numpy._core`: import the
        # real module (same objects) rather than warn on every load of an older pickle.
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if importlib.util.find_spec("numpy._core") else module
        # Imported only once an allowed name is asked for, and only that module.
        return getattr(importlib.import_module(module), name)


def load_restricted(path: Path, what: str = "a ground-truth file holds only lists, dicts and numbers") -> Any:
    """Unpickle `path` with the allow-list above; UnsafePickleError if it names anything else.
    `what` says, in the refusal, what the file should have held."""
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), what).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{path} is not a readable pickle: {exc}") from exc
