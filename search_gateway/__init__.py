"""The search gateway: the public HTTP API in front of the scraper and the embed server."""
