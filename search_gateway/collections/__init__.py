"""Private collections: their records, uploads, reindexing, deletion, quota, the sweeps of
what an interrupted write left, and the blob store of uploaded originals.
Never imports search/ (nor search/ this room)."""
