"""Random weights that depend on (seed, model name) alone, whatever else the process does.

torch's default generator is one per process. Seeding it and then building is a race:
anything on another thread that draws from it, or saves and restores its state (the
dynamo exporter does), changes what the seed builds, and a lock only the builders take
cannot stop that. open_clip and transformers draw from the default generator and take
no generator of their own, so while a family builds, a torch function mode hands each
random operation an explicit generator seeded for that model. Function modes are
per-thread, so the mode steers this thread's draws and no other's; the libraries'
own initialisation schemes (and so the tiny models' numerics) are kept as they are.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from embed_server.models.base import Towers
from embed_server.models.cards import Architecture

# torch operations that draw random numbers; each takes a keyword `generator`. Python
# functions that dispatch to modes themselves (torch.nn.init.kaiming_uniform_ and a few
# others) are recognised by passing `generator=None`: inside them modes are off, so
# they must get the generator on the way in.
_RANDOM_OPERATIONS = frozenset(
    {
        "bernoulli", "bernoulli_", "binomial", "cauchy_", "exponential_", "geometric_", "log_normal_",
        "multinomial", "normal", "normal_", "poisson", "rand", "rand_like", "randint", "randint_like",
        "randn", "randn_like", "randperm", "random_", "uniform_",
    }
)


class _ExplicitGenerator(TorchFunctionMode):
    """Gives `generator` to every random operation run on this thread that has none."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.generator = generator

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        draws = "generator" in kwargs or getattr(func, "__name__", "") in _RANDOM_OPERATIONS
        if draws and kwargs.get("generator") is None:
            kwargs = {**kwargs, "generator": self.generator}
        return func(*args, **kwargs)


def model_seed(name: str, seed: int) -> int:
    # Distinct streams per model from one EMBED_SEED. The same formula as when the
    # default generator was seeded, so a given seed still builds the weights it did.
    return seed + zlib.crc32(name.encode())


def build_random(name: str, architecture: Architecture, seed: int) -> Towers:
    """Model `name` with random weights drawn from its own generator only: the same
    (name, architecture, seed) gives bit-identical weights on any thread, at any time."""
    from embed_server.models import family

    generator = torch.Generator().manual_seed(model_seed(name, seed))
    with _ExplicitGenerator(generator):
        return family(name).build_random(architecture)
