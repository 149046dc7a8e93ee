"""Benchmarks of issue #2 (``python -m tests.bench``); never collected by pytest."""

from __future__ import annotations
