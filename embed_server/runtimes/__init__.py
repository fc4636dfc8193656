"""Runtimes execute a built model's towers; model families never know which one runs them."""
