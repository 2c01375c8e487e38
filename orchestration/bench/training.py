"""Benchmark: training throughput of plain LCD, RG-LCD (direct reward) and RG-LCD + LRM.

    python -m orchestration.bench.training [--steps 30] [--warmup 5] [key.sub=value ...]

Each variant is one real run of ``python trainer/run.py`` (Ray Train worker, Ray Data input,
and for the LRM variant the toy-judge expert on Ray Serve) on the toy world, with every step
logged (``output.log_every=1``), no sample grids and only the final checkpoint. From each
run's ``metrics.jsonl`` it prints, over the steps after ``--warmup``:

  steps/s and samples/s   from ``time_step`` (data fetch + the whole training step)
  not-compute fraction    1 - model compute / step time, where model compute is the teacher,
                          student, reward, backward and optimizer phases minus the time spent
                          waiting for expert rewards; the rest is data wait, reward wait and
                          overhead (logging, host-side bookkeeping)
  wall                    the whole command, Ray start-up and export included

Overrides after the options apply to every variant (e.g. ``lcd.global_batch_size=16``).
``--from-runs DIR [DIR ...]`` reads finished runs' ``metrics.jsonl`` instead of training
(e.g. the miniature Table 1's runs under outputs/table1/; their logged steps are a sample
of every ``output.log_every``-th step).
The variants' recipes are configs/toy-lcd.yaml, configs/toy-rglcd-toy-clip.yaml and
configs/toy-rglcd-lrm-toy-judge.yaml (the default: RG-LCD + LRM, toy-judge expert).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestration.paths import REPO_ROOT
from trainer.run_outputs.monitoring import METRICS_FILE, read_metrics

VARIANTS = {
    "plain LCD": "configs/toy-lcd.yaml",
    "RG-LCD direct (toy-clip)": "configs/toy-rglcd-toy-clip.yaml",
    "RG-LCD + LRM (toy-judge)": "configs/toy-rglcd-lrm-toy-judge.yaml",
}
COMPUTE_PHASES = ("time_teacher", "time_student", "time_reward", "time_backward",
                  "time_optimizer")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="Training steps per variant.")
    parser.add_argument("--warmup", type=int, default=5, help="First steps left out of rates.")
    parser.add_argument("--only", default=None, help="Comma-separated variant recipe files.")
    parser.add_argument("--from-runs", nargs="+", type=Path, default=None,
                        help="Output folders of finished runs to summarise instead.")
    parser.add_argument("overrides", nargs="*", help="Trainer config key.sub=value overrides.")
    return parser.parse_args(argv)


def run_variant(recipe: str, steps: int, out_dir: Path, overrides: list[str]) -> float:
    """Run the trainer once; returns the command's wall seconds. Raises on a failed run."""
    command = [
        sys.executable, str(REPO_ROOT / "trainer" / "run.py"), "--config", recipe,
        f"lcd.max_steps={steps}", "output.log_every=1", "output.sample_every=0",
        "output.checkpoint_every=0", f"output.dir={out_dir}", *overrides,
    ]
    start = time.monotonic()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}"
                           f"\n{done.stderr[-3000:]}")
    return time.monotonic() - start


def step_figures(rows: list[dict], warmup: int) -> dict[str, float]:
    """Rates and the not-compute fraction over the logged steps after `warmup`."""
    timed = [r for r in rows if r["step"] >= warmup and "time_step" in r]
    if not timed:
        raise RuntimeError(f"no logged steps after the first {warmup}; raise --steps")
    step_seconds = sum(r["time_step"] for r in timed)
    compute = sum(sum(r.get(k, 0.0) for k in COMPUTE_PHASES) - r.get("time_reward_wait", 0.0)
                  for r in timed)
    return {
        "steps": len(timed),
        "steps_per_s": len(timed) / step_seconds,
        "median_step_s": statistics.median(r["time_step"] for r in timed),
        "not_compute_fraction": 1.0 - compute / step_seconds,
        "data_fraction": sum(r.get("time_data", 0.0) for r in timed) / step_seconds,
        "reward_wait_fraction": sum(r.get("time_reward_wait", 0.0) for r in timed) / step_seconds,
    }


def print_row(name: str, fig: dict, batch: int, wall: float | None) -> None:
    wall_text = f"{wall:>7.0f}" if wall is not None else f"{'-':>7}"
    print(f"{name:<28} {fig['steps_per_s']:>8.3f} {fig['steps_per_s'] * batch:>10.1f} "
          f"{fig['median_step_s']:>9.3f} {fig['not_compute_fraction']:>11.1%} "
          f"{fig['data_fraction']:>6.1%} {fig['reward_wait_fraction']:>6.1%} {wall_text}",
          flush=True)


def summarise_runs(folders: list[Path], warmup: int, batch: int) -> None:
    """One row per finished run folder, all with global batch `batch`."""
    for folder in folders:
        fig = step_figures(read_metrics(folder / METRICS_FILE), warmup)
        print_row(folder.name, fig, batch, None)


def main(argv=None) -> int:
    args = parse_args(argv)
    from trainer.config import load_trainer_config  # deferred: loads torch

    chosen = args.only.split(",") if args.only else list(VARIANTS.values())
    print(f"{'variant':<28} {'steps/s':>8} {'samples/s':>10} {'median s':>9} "
          f"{'not-compute':>11} {'data':>6} {'rwait':>6} {'wall s':>7}")
    if args.from_runs:  # batch: the defaults plus the overrides given here
        batch = load_trainer_config(None, args.overrides, check_paths=False)
        summarise_runs(args.from_runs, args.warmup, batch.lcd.global_batch_size)
        return 0
    with tempfile.TemporaryDirectory(prefix="rglcd-bench-") as scratch:
        for name, recipe in VARIANTS.items():
            if recipe not in chosen:
                continue
            batch = load_trainer_config(REPO_ROOT / recipe, args.overrides,
                                        check_paths=False).lcd.global_batch_size
            out_dir = Path(scratch) / Path(recipe).stem
            wall = run_variant(recipe, args.steps, out_dir, args.overrides)
            fig = step_figures(read_metrics(out_dir / METRICS_FILE), args.warmup)
            print_row(name, fig, batch, wall)
    print("steps/s and samples/s over steps after the warm-up; not-compute = data wait + "
          "expert-reward wait + overhead, as a fraction of step time; wall = whole command.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
