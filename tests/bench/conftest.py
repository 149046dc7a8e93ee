"""The benchmarks are scripts, not tests: keep pytest out of this directory."""

from __future__ import annotations

collect_ignore_glob = ["*.py"]
