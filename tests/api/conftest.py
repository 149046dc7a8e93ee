"""Fixtures of the REST tests."""

from __future__ import annotations

from tests.api.rest_support import api

__all__ = ["api"]
