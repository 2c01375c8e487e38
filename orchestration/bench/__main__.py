"""Run the performance benchmarks and write one table of ratios, goals and pass/fail.

    python -m orchestration.bench all            # every benchmark below, in one go
    python -m orchestration.bench latency        # RG-LCD + LRM with a slow, failing expert
    python -m orchestration.bench service        # reward service batching sweep (toy-clip)
    python -m orchestration.bench sampling       # 2-step LCM vs 50-step CFG teacher
    python -m orchestration.bench demo           # wall time of the default demo (make demo)
    python -m orchestration.bench suite          # wall time of make test, with its profile

Each benchmark measures its arms side by side in this one run (alternating where it can) and
prints its details; the table (orchestration/bench/table.py) goes to outputs/bench/table.md
and between the `bench` markers of docs/results.md (the rest of that file is left alone).
A single benchmark rewrites the table with its rows only. Figures are only comparable within
one run on one machine: rerun `all` on a quiet machine before quoting them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from importlib import import_module

from orchestration.bench.table import render_block, render_table, write_block
from orchestration.paths import REPO_ROOT

RESULTS_FILE = REPO_ROOT / "docs" / "results.md"
TABLE_FILE = REPO_ROOT / "outputs" / "bench" / "table.md"
BENCHMARKS = ("latency", "service", "sampling", "demo", "suite")
MODULES = {"demo": "default_run"}  # benchmark name -> module of orchestration.bench


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orchestration.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("all", *BENCHMARKS))
    latency = parser.add_argument_group("latency")
    latency.add_argument("--steps", type=int, default=20, help="timed steps per arm and round")
    latency.add_argument("--delay-s", type=float, default=3.0, help="expert latency per call")
    latency.add_argument("--failure-rate", type=float, default=0.2, help="expert calls failing")
    latency.add_argument("--heldout", type=int, default=96, help="held-out triplets")
    service = parser.add_argument_group("service")
    service.add_argument("--clients", type=int, default=32)
    service.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the arms")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    return parser.parse_args(argv)


def machine_context(which: str, seconds: float) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"`python -m orchestration.bench {which}` on a "
            f"{os.cpu_count()}-core {platform.machine()} CPU machine, load average "
            f"{load:.1f} at the end, {seconds:.0f} s in all.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = BENCHMARKS if args.which == "all" else (args.which,)
    import torch

    rows, details = [], []
    start = time.monotonic()
    threads = torch.get_num_threads()
    for name in chosen:
        torch.set_num_threads(threads)  # the latency bench sets a training worker's count
        bench = import_module(f"orchestration.bench.{MODULES.get(name, name)}")
        bench_rows, detail = bench.run(args)
        print(detail, flush=True)
        rows += bench_rows
        details.append(detail)

    print(render_table(rows))
    if not args.no_write:
        block = render_block(rows, machine_context(args.which, time.monotonic() - start),
                             details)
        TABLE_FILE.parent.mkdir(parents=True, exist_ok=True)
        TABLE_FILE.write_text(block, encoding="utf-8")
        write_block(RESULTS_FILE, block)
        print(f"wrote {TABLE_FILE.relative_to(REPO_ROOT)} and the bench block of "
              f"{RESULTS_FILE.relative_to(REPO_ROOT)}")
    return 0  # a measurement, not a test: the table says what passed


if __name__ == "__main__":
    sys.exit(main())
