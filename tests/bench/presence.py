"""The presence scenario of issue 16: fan-out of one user's presence, typing latency.

* fan-out: 1,000 devices (1,000 users) watch one user, whose device connects and
  disconnects in a loop: each connect is ONLINE and each disconnect OFFLINE to all 1,000.
  Deliveries/s is fan-outs in the measured interval x 1,000 / its length.  The server
  also authenticates each of the star's connections (a store read) and commits its
  last-seen times: the figure includes that cost.  "per server core" divides by the
  server's CPU share, so a generator that cannot keep the server busy does not hide
  what one core does.
* typing: 50 typists each typing to its peer, 10,000 TYPING a second in all (open loop,
  ~1 ms bursts); latency from the PRESENCE_SET written to the peer's PRESENCE read.  The
  per-device rate of PRESENCE_SET (4 a second by default) is raised for the run.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from tests.bench.harness import EDGE_OFF, Usage, generators, server, sleep_until, start_together
from tests.bench.report import Row, at_least, at_most
from tests.bench.scenarios import LATENCY_STEAL_LIMIT_PCT, Settings, check_disturbance, warn

SUBSCRIBERS = 1000
TYPING_PAIRS = 50
_NS = 1_000_000_000
#: The run's server configuration: typing far above a device's default rate.
_LIMITS = "[limits]\npresence_rate_per_s = 1000000.0\npresence_burst = 1000000\n"


class Presence:
    name = "presence"
    rows: ClassVar[list[Row]] = [
        Row("fanout.deliveries", "fan-out: presence deliveries/s"),
        Row("fanout.per_core", "fan-out: deliveries/s per server core", target=">= 100,000",
            ok=at_least(100_000)),
        Row("fanout.cycles", "fan-out: star connect+disconnect cycles/s"),
        Row("fanout.missing", "fan-out: entries missing at the end"),
        Row("fanout.server_cpu", "fan-out: server CPU %"),
        Row("fanout.gen_cpu", "fan-out: generator CPU %"),
        Row("typing.p50", "typing: p50 ms", "{:.2f}"),
        Row("typing.p99", "typing: p99 ms", "{:.2f}", "<= 5", at_most(5)),
        Row("typing.p999", "typing: p99.9 ms", "{:.2f}"),
        Row("typing.max", "typing: max ms", "{:.2f}"),
        Row("typing.rate", "typing: notifications received/s"),
        Row("typing.missing", "typing: notifications missing"),
        Row("typing.server_cpu", "typing: server CPU %"),
    ]

    def title(self, s: Settings) -> str:
        return (f"presence: {SUBSCRIBERS:,} watchers of one user going online and offline;"
                f" {TYPING_PAIRS} typists at {s.latency_rate:,} TYPING/s,"
                f" {s.warmup_s:g} s warm-up + {s.measure_s:g} s measured")

    def users_needed(self, quick: bool) -> int:
        return 1 + SUBSCRIBERS

    def run(self, s: Settings) -> dict[str, float]:
        users = s.template()
        fanout = {"mode": "fanout", "star": users.tokens[0], "star_address": users.addresses[0],
                  "subscribers": users.tokens[1:1 + SUBSCRIBERS], "rcvlowat": 16_384}
        out = {f"fanout.{k}": v for k, v in self._one(s, fanout).items()}
        pairs = [[users.tokens[2 * i + 1], users.tokens[2 * i + 2], users.addresses[2 * i + 2]]
                 for i in range(TYPING_PAIRS)]
        typing = {"mode": "typing", "pairs": pairs, "rate": s.latency_rate}
        out.update({f"typing.{k}": v for k, v in self._one(s, typing).items()})
        return out

    def _one(self, s: Settings, spec: dict[str, Any]) -> dict[str, float]:
        users = s.template()
        warm, measure = s.warmup_s, s.measure_s
        with contextlib.ExitStack() as stack:
            run_dir = stack.enter_context(users.fresh_copy(s.root))
            s.settle()
            srv = stack.enter_context(server(run_dir / "data", s.server_cpu, edge=EDGE_OFF,
                                             extra=_LIMITS))
            assert srv.proc is not None
            full = {**spec, "kind": "presence", "host": srv.host, "port": srv.port,
                    "warmup_s": warm, "measure_s": measure}
            with generators([full], run_dir, s.gen_cpu) as (gen,):
                gen.expect("ready", 120)
                t0 = start_together([gen])
                sleep_until(t0 + int(warm * _NS))
                usage = Usage(srv.proc.pid, s.cpus)
                sleep_until(t0 + int((warm + measure) * _NS))
                usage.stop()
                result = gen.expect("result", 120)
                gen.finish()
        gen_pct = 100 * result["cpu_s"] / (warm + measure)
        check_disturbance(s, f"presence/{spec['mode']}", usage.other_pct(result["cpu_s"]),
                          usage.steal_s / usage.seconds * 100,
                          steal_limit=LATENCY_STEAL_LIMIT_PCT)
        if result.get("missing"):
            warn(f"presence/{spec['mode']}: {result['missing']} entries never arrived")
        if spec["mode"] == "fanout":
            rate = result["deliveries_per_s"]
            return {"deliveries": rate, "cycles": result["cycles_per_s"],
                    "per_core": rate / max(usage.server_pct / 100, 0.01),
                    "missing": float(result["missing"]), "server_cpu": usage.server_pct,
                    "gen_cpu": gen_pct}
        return {**{k: result[k] for k in ("p50", "p99", "p999", "max") if k in result},
                "rate": result["rate"], "missing": float(result["missing"]),
                "server_cpu": usage.server_pct}
