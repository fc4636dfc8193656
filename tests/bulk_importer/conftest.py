"""The importer runs against the gateway tests' stack (tests/support/gateway_stack.py)."""

from tests.support.gateway_stack import embed, scraper, site, stack  # noqa: F401 - fixtures, found here by pytest
