"""The images check: a real pool of workers thumbnails a PNG made without Pillow."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

from appliance.config import load_config
from appliance.doctor.images import NAME, SAMPLE_PX, check_images, sample_png
from appliance.doctor.model import Verdict
from appliance.doctor.registry import examine
from appliance.engine.clock import SystemClock


def test_the_sample_png_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "s.png"
    path.write_bytes(sample_png(SAMPLE_PX, 32))
    with Image.open(path) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (SAMPLE_PX, 32), "RGB")
        image.load()  # its CRCs and data are right too


def test_working_image_workers_pass(data_dir: Path) -> None:
    subject = examine(load_config(None, {"storage.data_dir": data_dir,
                                         "media.image_workers": 1}), SystemClock().wall_ms())
    finding = check_images(subject)
    assert (finding.check, finding.verdict) == (NAME, Verdict.OK), finding
    assert finding.figures["workers"] == 1
    assert 0 < finding.figures["startup_s"] < 10
    assert "started in" in finding.summary


def test_workers_that_cannot_start_fail_with_a_fix(data_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # An interpreter that exits at once, as a worker would on a noexec TMPDIR.
    monkeypatch.setattr(sys, "executable", "/bin/false")
    subject = examine(load_config(None, {"storage.data_dir": data_dir}), SystemClock().wall_ms())
    finding = check_images(subject)
    assert finding.verdict is Verdict.FAIL
    assert "did not start" in finding.summary
    assert "noexec" in finding.fix
