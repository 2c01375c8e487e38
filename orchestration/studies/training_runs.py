"""One exported training run for the studies (toy_table1.py, seed_study.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from orchestration.paths import REPO_ROOT


def train_once(
    config: str | Path,
    out_dir: Path,
    run_name: str,
    overrides: Sequence[str] = (),
    retrain: bool = False,
    label: str = "",
) -> None:
    """`trainer/run.py --config CONFIG [overrides]` into `out_dir` (a subprocess with its own
    local Ray, or RAY_ADDRESS's); skipped when `out_dir/pipeline` is exported, unless
    `retrain`. A folder without an export is removed first: a fresh run, not a resume."""
    label = label or run_name
    if (out_dir / "pipeline" / "model_index.json").is_file() and not retrain:
        print(f"[{label}] exported pipeline found at {out_dir / 'pipeline'}; not retrained")
        return
    if out_dir.exists():
        shutil.rmtree(out_dir)
    command = [sys.executable, "-m", "trainer.run", "--config", str(config),
               *overrides, f"output.dir={out_dir}", f"run_name={run_name}"]
    start = time.monotonic()
    print(f"[{label}] training: {' '.join(command)}", flush=True)
    subprocess.run(command, cwd=REPO_ROOT, check=True)
    print(f"[{label}] trained in {time.monotonic() - start:.0f} s", flush=True)
