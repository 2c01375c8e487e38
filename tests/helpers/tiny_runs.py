"""Tiny Ray Train runs of the trainer for the Ray-tier tests (config and result readers).

Every run distils the tiny teacher at 16x16, global batch 4, from pre-encoded latent shards,
plain LCD (reward.beta=0) so that runs with the same seed log the same numbers bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainer.config import load_trainer_config

STEPS = 4
CHECKPOINT_EVERY = 2


def tiny_run_config(inputs: dict[str, Path], run_name: str, max_steps: int = STEPS, *extra: str):
    return load_trainer_config(
        None,
        [
            f"model.teacher={inputs['teacher']}",
            "model.resolution=16",
            "reward.beta=0",  # plain LCD: the numbers must repeat bit for bit
            f"data.train_path={inputs['data']}",
            f"lcd.max_steps={max_steps}",
            "lcd.global_batch_size=4",
            f"output.root_dir={inputs['root'] / 'out'}",
            f"run_name={run_name}",
            "output.log_every=1",
            "output.sample_every=0",
            f"output.checkpoint_every={CHECKPOINT_EVERY}",
            "output.keep_checkpoints=3",  # room to see a checkpoint reported twice
            *extra,
        ],
    )


def metrics_rows(cfg) -> list[dict]:
    lines = (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def numbers(rows: list[dict]) -> list[dict]:
    """The deterministic part of each row (timings vary from run to run)."""
    return [{k: v for k, v in row.items() if not k.startswith("time_")} for row in rows]


def checkpoints(result) -> list[tuple[int, str]]:
    """(step, path) of every checkpoint Ray Train holds for the run, oldest first."""
    return [(metrics["step"], ckpt.path) for ckpt, metrics in result.best_checkpoints]
