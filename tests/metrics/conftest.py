"""The metrics tests use the certificate tests' real ACME CA (pebble) for the ACME figures."""

from __future__ import annotations

from tests.certs.conftest import make_pebble

__all__ = ["make_pebble"]
