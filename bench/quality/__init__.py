"""Search quality: does a search find the right images? (`python -m bench.quality`)."""
