"""Exceptions raised by the core; the servicer turns each into one gRPC status."""

from __future__ import annotations


class InvalidInput(ValueError):
    """The request itself is wrong (INVALID_ARGUMENT)."""


class UnknownModel(InvalidInput):
    def __init__(self, name: str, served: tuple[str, ...]) -> None:
        super().__init__(f"unknown model {name!r}; this server serves: {', '.join(served)}")


class NoTextTower(InvalidInput):
    def __init__(self, name: str, with_text: tuple[str, ...]) -> None:
        names = ", ".join(with_text) or "none of the served models"
        super().__init__(f"model {name!r} has no text tower; text works with: {names}")


class Overloaded(RuntimeError):
    """The model's queue is full: retry later, ideally elsewhere (RESOURCE_EXHAUSTED)."""


class ModelUnavailable(RuntimeError):
    """The model failed to load or is not ready (UNAVAILABLE / FAILED_PRECONDITION)."""


class ModelFailed(ModelUnavailable):
    """The model failed to load; retrying will not help until it is fixed (FAILED_PRECONDITION)."""


class WeightsNotFound(FileNotFoundError):
    """Pretrained weights are not on this machine; the message says how to fetch them."""
