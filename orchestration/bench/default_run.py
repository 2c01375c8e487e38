"""Benchmark: wall time of the default main job, the way a newcomer starts it.

    python -m orchestration.bench.default_run [--how local job] [key.sub=value ...]

  local  `python trainer/run.py` in a fresh process: it starts its own local Ray instance,
         deploys the reward service, trains, exports and writes its report (`make demo`).
  job    `ray job submit --working-dir . -- python trainer/run.py` on a private
         `ray start --head` cluster started here first (orchestration/local_head.py; its
         start-up is timed apart, and it is torn down afterwards, never with `ray stop`).

Runs go to outputs/bench-default/<how> (output.root_dir, absolute, so the job writes there
too); overrides apply to both. Prints each wall time against the 10-minute target and the
run's own step timings (median step, first step's wait for data). No assertion: figures.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from orchestration.bench.table import Row
from orchestration.local_head import cluster_env, private_head, submit_job
from orchestration.paths import REPO_ROOT
from rglcd.recipes import DEFAULT_RECIPE

TARGET_S = 600.0
DEFAULT_ROOT = REPO_ROOT / "outputs" / "bench-default"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--how", nargs="+", choices=("local", "job"), default=["local", "job"])
    parser.add_argument("--head-cpus", type=int, default=0,
                        help="Logical CPUs of the job cluster's head (0 = what the run "
                        "reserves, rounded up).")
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("overrides", nargs="*")
    return parser.parse_args(argv)


def run_args(root: Path, how: str, overrides: list[str]) -> list[str]:
    return ["trainer/run.py", f"output.root_dir={root / how}", f"run_name={how}", *overrides]


def step_figures(run_dir: Path) -> dict[str, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["time_step"] for r in rows if r["step"] > 0 and "time_step" in r]
    return {
        "logged_steps": len(rows),
        "median_step_s": round(statistics.median(steps), 3) if steps else math.nan,
        "first_step_data_wait_s": round(rows[0].get("time_data", math.nan), 1),
    }


def time_local(root: Path, overrides: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *run_args(root, "local", overrides)], cwd=REPO_ROOT,
                          env=cluster_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"trainer/run.py failed:\n{proc.stderr[-3000:]}")
    return {"wall_s": round(seconds, 1), **step_figures(root / "local" / "local")}


def time_job(root: Path, overrides: list[str], head_cpus: int) -> dict:
    if not head_cpus:
        from trainer.cluster.ray_connect import logical_cpus_needed  # deferred: loads torch
        from trainer.config import load_trainer_config  # deferred: loads torch

        head_cpus = math.ceil(logical_cpus_needed(load_trainer_config(DEFAULT_RECIPE, overrides)))
    start = time.perf_counter()
    with private_head(num_cpus=head_cpus) as url:
        head_seconds = time.perf_counter() - start
        start = time.perf_counter()
        proc = submit_job(url, REPO_ROOT, ["python", *run_args(root, "job", overrides)], REPO_ROOT)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the job failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return {"wall_s": round(seconds, 1), "head_start_s": round(head_seconds, 1),
            "head_cpus": head_cpus, **step_figures(root / "job" / "job")}


DEMO_GOAL_S = 300.0


def run(args):
    """(table rows, markdown details) of the default demo (`make demo`) for `bench all`."""
    shutil.rmtree(DEFAULT_ROOT / "local", ignore_errors=True)  # a fresh run, not a resume
    local = time_local(DEFAULT_ROOT, [])
    row = Row(
        "default demo wall time (`make demo`)",
        f"{local['logged_steps']} logged rows, median step {local['median_step_s']} s, "
        f"first step's data wait {local['first_step_data_wait_s']} s",
        f"{local['wall_s']:.0f} s", f"<= {DEMO_GOAL_S:.0f} s", local["wall_s"] <= DEMO_GOAL_S,
        "python -m orchestration.bench demo",
    )
    return [row], f"**Default demo**: {json.dumps(local)}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.root).resolve()
    results = {}
    for how in args.how:
        shutil.rmtree(root / how, ignore_errors=True)  # a fresh run, not a resume
        if how == "local":
            results[how] = time_local(root, args.overrides)
        else:
            results[how] = time_job(root, args.overrides, args.head_cpus)
        verdict = "within" if results[how]["wall_s"] <= TARGET_S else "OVER"
        print(f"{how}: {json.dumps(results[how])}  ({verdict} the {TARGET_S:.0f} s target)",
              flush=True)
    (root / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
