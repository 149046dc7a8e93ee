"""The `edge` scenario (issue 12): what the IP filter and the limits cost the engine.

Transient and reliable 1:1 throughput and connects/s, each run twice: with the
per-address limits off and no filter (the other scenarios' setting), then with
100,000 CIDRs in the block file (none covering the benchmark's 127.0.0.x
sources, so every connection is looked up and admitted) and every limit on,
sized so that the benchmark's own traffic stays under them.  Target: "on"
within 5 % of "off".
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import ClassVar

from tests.bench.harness import EDGE_OFF, server
from tests.bench.report import Row, at_least
from tests.bench.scenarios import (
    Connect,
    Settings,
    _prefixed,
    conn_specs,
    open_conns,
    run_pairs,
)

FILTER_CIDRS = 100_000


def edge_on(block_file: Path) -> str:
    """Every limit on; the benchmark opens up to 500 connections per source, 256 at once."""
    return ("[edge]\nexempt = []\n"
            f'block_file = "{block_file}"\n'
            "per_ip_connections = 2000\nper_ip_handshakes = 512\n"
            "per_ip_rate_per_s = 100000\nper_ip_burst = 2000\n"
            "auth_fail_count = 30\n")


def write_block_file(path: Path) -> Path:
    """50,000 IPv4 /24s in 10.0.0.0/8 and 50,000 IPv6 /48s in 2001:db8::/32."""
    lines = [f"{ipaddress.IPv4Network(((10 << 24) + (i << 8), 24))}\n" for i in range(50_000)]
    lines += [f"{ipaddress.IPv6Network(((0x20010DB8 << 96) + (i << 80), 48))}\n"
              for i in range(FILTER_CIDRS - 50_000)]
    path.write_text("".join(lines))
    return path


def _ratio(on: float, off: float) -> float:
    return 100.0 * on / off if off else 0.0


class EdgeCost:
    name = "edge"
    rows: ClassVar[list[Row]] = [
        Row("off.transient.received", "limits off: transient msg/s"),
        Row("on.transient.received", "limits on + 100k CIDRs: transient msg/s"),
        Row("transient_pct", "transient: on / off %", "{:.1f}", target=">= 95",
            ok=at_least(95)),
        Row("off.reliable.received", "limits off: reliable msg/s"),
        Row("on.reliable.received", "limits on + 100k CIDRs: reliable msg/s"),
        Row("reliable_pct", "reliable: on / off %", "{:.1f}", target=">= 95", ok=at_least(95)),
        Row("off.connect.rate", "limits off: connects+HELLO/WELCOME per s"),
        Row("on.connect.rate", "limits on + 100k CIDRs: connects+HELLO/WELCOME per s"),
        Row("connect_pct", "connects: on / off %", "{:.1f}", target=">= 95", ok=at_least(95)),
        Row("on.connect.failed", "limits on: failed handshakes"),
    ]

    def title(self, s: Settings) -> str:
        return ("edge: throughput (transient, reliable) and connects/s with the per-address"
                f" limits off and no filter, then with {FILTER_CIDRS:,} CIDRs blocked and every"
                " limit on")

    def users_needed(self, quick: bool) -> int:
        return Connect().users_needed(quick)

    def run(self, s: Settings) -> dict[str, float]:
        block_file = write_block_file(s.root / "edge-block.txt")
        out: dict[str, float] = {}
        for label, edge in (("off", EDGE_OFF), ("on", edge_on(block_file))):
            out.update(_prefixed(f"{label}.transient", run_pairs(
                s, "throughput", "transient", window=500, gens=s.generators,
                rcvlowat=s.rcvlowat, edge=edge)))
            out.update(_prefixed(f"{label}.reliable", run_pairs(
                s, "throughput", "reliable", window=200, gens=s.generators, edge=edge)))
            out.update(_prefixed(f"{label}.connect", self._connects(s, edge)))
        out["transient_pct"] = _ratio(out["on.transient.received"],
                                      out["off.transient.received"])
        out["reliable_pct"] = _ratio(out["on.reliable.received"], out["off.reliable.received"])
        out["connect_pct"] = _ratio(out["on.connect.rate"], out["off.connect.rate"])
        return out

    def _connects(self, s: Settings, edge: str) -> dict[str, float]:
        connect = Connect()
        gens = max(2, s.generators)
        s.settle()
        with s.template().fresh_copy(s.root) as run_dir, \
                server(run_dir / "data", s.server_cpu, edge=edge) as srv:
            assert srv.proc is not None
            specs = conn_specs(s, srv.host, srv.port, connect.count(s.quick),
                               connect.concurrency, gens)
            return open_conns(s, specs, run_dir, srv.proc.pid)
