"""Challenge answers read from the store are budgeted (issue 13): a flood of made-up
tokens or acme-tls/1 hellos costs at most `ANSWER_READS_*` database reads."""

from __future__ import annotations

import asyncio
from pathlib import Path

from appliance.certs.challenges import ChallengeAnswers
from appliance.transport.tls import ANSWER_READS_BURST, ANSWER_READS_PER_S, TlsContexts


def test_store_reads_for_answers_stay_within_the_budget(tmp_path: Path) -> None:
    reads: list[str] = []

    async def from_store(name: str) -> bytes | None:
        reads.append(name)
        return None

    async def go() -> int:
        tls = TlsContexts("", "", tmp_path, ChallengeAnswers(), fetch_answer=from_store,
                          hostnames=("chat.example.org",))
        assert tls.fetch_answer is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        answers = [await tls.fetch_answer(f"http-01:tok{i}") for i in range(5000)]
        assert answers == [None] * 5000
        return int(loop.time() - start) + 1

    elapsed_s = asyncio.run(go())
    assert len(reads) <= ANSWER_READS_BURST + ANSWER_READS_PER_S * elapsed_s
    assert len(reads) >= ANSWER_READS_BURST  # honest validations are not refused
