"""Fixtures of every gateway test below this folder (tests/support/gateway_stack.py builds them):
the embed server (one per module), the candidate-image site, the scraper and the whole stack."""

from tests.support.gateway_stack import embed, scraper, site, stack  # noqa: F401 - fixtures, found here by pytest
