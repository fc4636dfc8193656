"""Fetching and checking images from the web: the downloader, its SSRF guard, the memory of
failed downloads, and the decoding of untrusted bytes."""
