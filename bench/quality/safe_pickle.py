"""The restricted unpickler lives with the embed server now (SqueezeNet's weights are a
pickle too); the benchmark's readers import it from here as before."""

from embed_server.models.safe_pickle import UnsafePickleError, load_restricted

__all__ = ["UnsafePickleError", "load_restricted"]
