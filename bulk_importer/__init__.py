"""The bulk importer: ``python -m bulk_importer PATH... --collection NAME``.

A client of the gateway's HTTP API only (it may run on another machine than the
gateway): it walks folders lazily, hashes each file, asks the gateway which hashes the
collection already holds, uploads the rest in batches and writes one report line per
input. Run again after a crash, it skips what arrived and sends the rest.
"""
