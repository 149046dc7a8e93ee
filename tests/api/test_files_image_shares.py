"""One app's burst of heavy images against another app's photo (session 18 attack review).

Every image uploaded is cleaned by the image workers (`appliance.media.images.pool`), which
all apps share: a real server with one worker and five waiting places, real uploads.
"""

from __future__ import annotations

import http.client
import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.support.hostile import HONEST_APP, HONEST_USERS
from tests.support.provision import provision
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

ATTACKER = "mallory"
WORKERS, QUEUE = 1, 5
#: An image the worker takes a while to clean (decoded and encoded again, 9 Mpx).
HEAVY_SIDE = 3000


@dataclass
class World:
    server: ServerProcess
    tokens: dict[str, str]

    def upload(self, user: str, data: bytes) -> tuple[int, float, str | None]:
        """POST /v1/files: (status, seconds it took, Retry-After)."""
        started = time.perf_counter()
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)
        try:
            conn.request("POST", "/v1/files?name=p.png", data, {
                "Authorization": f"Bearer {self.tokens[user]}", "Content-Type": "image/png"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status == 201:
            assert json.loads(body)["width"] > 0  # cleaned as an image
        return (response.status, time.perf_counter() - started,
                response.getheader("retry-after"))


@pytest.fixture
def world(data_dir: Path) -> Iterator[World]:
    honest, _ = provision(data_dir, HONEST_USERS, app=HONEST_APP)
    attacker, _ = provision(data_dir, [ATTACKER])
    server = ServerProcess.configured(
        data_dir, f'[storage]\ndata_dir = "{data_dir}"\n'
        f"[media]\nimage_workers = {WORKERS}\nimage_queue = {QUEUE}\n"
        "uploads_per_minute = 600\n")
    server.start()
    try:
        yield World(server, {**honest, **attacker})
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output


def _png(side: int) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").resize((side, side)).convert("RGB").save(out, "PNG")
    return out.getvalue()


def test_one_apps_heavy_images_leave_another_app_its_turn(world: World) -> None:
    """Measured before the fix: the workers took jobs first come, first served, and one
    app could take every place.  A burst of 6 heavy PNGs from one user (1 worker, 5
    places waiting) made another app's small photo wait 1.00-1.01 s, behind all that
    was left of the burst (3.3-3.7 heavy jobs of 0.27-0.31 s); one heavy image more and
    there is no place left: the photo is refused (503) and its upload dropped.  Now an
    app has at most half the places (3 of 6: the rest of the burst is refused at once,
    503 with Retry-After) and a worker that comes free goes to the app holding the
    fewest: the photo took 0.20 s (0.74 of a heavy job), the job running, at most."""
    heavy, photo = _png(HEAVY_SIDE), _png(64)
    burst = WORKERS + QUEUE
    with ThreadPoolExecutor(burst) as pool:
        attack = [pool.submit(world.upload, ATTACKER, heavy) for _ in range(burst)]
        # Once a heavy image is done, every other one of the burst was taken or refused.
        one_job = next(took for status, took, _ in (a.result() for a in as_completed(attack))
                       if status == 201)
        status, took, _ = world.upload(HONEST_USERS[0], photo)
        results = [a.result() for a in attack]
    assert status == 201
    assert took < 2.5 * one_job, f"the photo waited {took:.2f} s: {took / one_job:.1f} jobs"
    statuses = sorted(s for s, _, _ in results)
    assert statuses == [201] * (burst // 2) + [503] * (burst - burst // 2), statuses
    assert {after for s, _, after in results if s == 503} == {"10"}  # image_timeout_s
