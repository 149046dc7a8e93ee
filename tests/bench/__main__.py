"""``python -m tests.bench [scenario ...] [--runs 3] [--quick]``: print the figures of issue #2.

Prints one table per scenario: the median of the runs, each run, and the
target from the issue.  Never asserts on timing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.acme import AcmeFirstCertificate
from tests.bench.edge import EdgeCost
from tests.bench.files import Files
from tests.bench.harness import BenchError, Users
from tests.bench.lifecycle import Lifecycle
from tests.bench.presence import Presence
from tests.bench.report import DISTURBED, FAILED, table
from tests.bench.scenarios import SCENARIOS, Scenario, Settings
from tests.bench.thumbnails import Thumbnails
from tests.bench.tls import TlsHandshakes

SCENARIOS[EdgeCost.name] = EdgeCost()  # issue 12, in its own module
SCENARIOS[TlsHandshakes.name] = TlsHandshakes()  # issue 13
SCENARIOS[AcmeFirstCertificate.name] = AcmeFirstCertificate()  # issue 13
SCENARIOS[Lifecycle.name] = Lifecycle()  # issue 14
SCENARIOS[Thumbnails.name] = Thumbnails()  # issue 15
SCENARIOS[Files.name] = Files()  # issue 15
SCENARIOS[Presence.name] = Presence()  # issue 16


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="scenario", default=list(SCENARIOS),
                        help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--runs", type=int, help="runs per scenario (default 3, --quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="shorter intervals and fewer connections (a smoke run)")
    parser.add_argument("--generators", type=int, default=1,
                        help="load generator processes for throughput/latency (memory and"
                             " connect use at least 2)")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to")
    parser.add_argument("--gen-cpu", type=int, default=1, help="CPU the generators are pinned to")
    parser.add_argument("--db-cpu", type=int, default=None,
                        help="CPU to pin mariadbd to in the mariadb scenario (default: none)")
    parser.add_argument("--rate", type=int, default=10_000,
                        help="msg/s of the latency scenario (the issue's figure: 10,000)")
    parser.add_argument("--rcvlowat", type=int, default=16_384, metavar="BYTES",
                        help="SO_RCVLOWAT of the receivers in transient throughput (0: wake"
                             " them for every segment)")
    parser.add_argument("--retries", type=int, default=2,
                        help="rerun a run whose timing was disturbed by other processes or"
                             " hypervisor steal up to this many times (default 2)")
    parser.add_argument("--quiet-wait", type=float, default=60.0, metavar="SECONDS",
                        help="before each run, wait up to this long for the two CPUs to be"
                             " idle (a shared machine); 0 disables")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from"
                     f" {', '.join(SCENARIOS)}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    return args


def code_version() -> str:
    """The commit the server runs from, plus a digest of uncommitted changes to appliance/."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        diff = git("diff", "HEAD", "--", "appliance")
        untracked = git("ls-files", "--others", "--exclude-standard", "--", "appliance")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if not (diff or untracked):
        return head
    digest = hashlib.sha1((diff + untracked).encode()).hexdigest()[:8]
    return f"{head} + uncommitted changes in appliance/ (diff {digest})"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    cpus = os.sched_getaffinity(0)
    if not {args.server_cpu, args.gen_cpu} <= cpus or args.server_cpu == args.gen_cpu:
        print(f"warning: server CPU {args.server_cpu} and generator CPU {args.gen_cpu} should be"
              f" two distinct CPUs of {sorted(cpus)}", file=sys.stderr)
    scenarios = [SCENARIOS[name] for name in dict.fromkeys(args.scenarios)]
    try:
        return run_all(args, scenarios)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run_once(sc: Scenario, settings: Settings, retries: int, index: int) -> dict[str, float]:
    """One run of `sc`; rerun up to `retries` times while its timing is disturbed."""
    attempt = 0
    while True:
        settings.disturbed = ""
        figures = sc.run(settings)
        if not settings.disturbed or attempt >= retries:
            return figures
        attempt += 1
        print(f"  run {index + 1} disturbed, running it again", flush=True)


def run_all(args: argparse.Namespace, scenarios: list[Scenario]) -> int:
    failed = False
    tables: list[str] = []
    disturbed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp, \
            contextlib.ExitStack() as cleanup:
        settings = Settings(args.quick, args.generators, args.server_cpu, args.gen_cpu, Path(tmp),
                            args.quiet_wait, args.rate, args.rcvlowat, db_cpu=args.db_cpu)
        cleanup.callback(lambda: settings.mariadb and settings.mariadb.stop())
        version = code_version()
        print(f"server code: {version}; server on CPU {args.server_cpu},"
              f" generators on CPU {args.gen_cpu}", flush=True)
        count = max(sc.users_needed(args.quick) for sc in scenarios)
        started = time.monotonic()
        print(f"creating {count:,} users with tokens ...", flush=True)
        settings.users = Users(Path(tmp), count)
        print(f"  done in {time.monotonic() - started:.1f} s", flush=True)
        for sc in scenarios:
            runs: list[dict[str, float]] = []
            print(f"\n[{sc.name}] {args.runs} run(s) ...", flush=True)
            for i in range(args.runs):
                started = time.monotonic()
                try:
                    runs.append(run_once(sc, settings, args.retries, i))
                except BenchError as exc:
                    failed = True
                    runs.append(dict(FAILED))
                    print(f"  run {i + 1} failed: {exc}", file=sys.stderr, flush=True)
                    continue
                if settings.disturbed:
                    runs[-1][DISTURBED] = 1.0
                    disturbed.append(f"{sc.name} run {i + 1}: {settings.disturbed}")
                print(f"  run {i + 1} done in {time.monotonic() - started:.1f} s", flush=True)
            if any(not r.get("_failed") for r in runs):
                tables.append(table(sc.title(settings), sc.rows, runs))
                print()
                print(tables[-1], flush=True)
    if len(tables) > 1:
        print(f"\n== summary (server code: {version}) ==")
        for text in tables:
            print()
            print(text)
    if disturbed:
        print("\nruns kept although disturbed (marked *; their timing figures are doubtful):")
        for line in disturbed:
            print(f"  {line}")
    if code_version() != version:
        print(f"\nwarning: the server code changed during the benchmark (now {code_version()});"
              " runs may have measured different code", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
