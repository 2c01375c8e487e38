"""DDP correctness on the shared cluster: 1 and 2 gloo workers see the same global batches.

Both runs distil the tiny teacher for 2 steps at global batch 4 (2 rows per worker in the
2-worker run). Step 0's loss checks the data sharding and per-sample draws; step 1's loss
depends on the first update, so it also checks that DDP averages the gradients like one
worker's full-batch gradient.
"""

from __future__ import annotations

import json

import pytest

from rglcd.tiny_models import save_tiny_sd_pipeline
from rglcd.toy.data import ensure_toy_dataset
from trainer.config import load_trainer_config
from trainer.run import build_trainer


@pytest.fixture(scope="module")
def tiny_run_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer-ddp")
    teacher = save_tiny_sd_pipeline(root / "teacher")
    data = root / "data"
    ensure_toy_dataset(data, "train", 24, seed=0)
    return root, teacher, data


def run_losses(root, teacher, data, workers: int) -> list[float]:
    cfg = load_trainer_config(
        None,
        [
            f"model.teacher={teacher}",
            "model.resolution=16",
            f"data.train_path={data}",
            "lcd.max_steps=2",
            "lcd.global_batch_size=4",
            f"scaling.num_workers={workers}",
            f"output.root_dir={root / 'out'}",
            f"run_name=ddp-{workers}",
            "output.log_every=1",
            "output.sample_every=0",
            "output.checkpoint_every=0",
        ],
    )
    build_trainer(cfg).fit()
    lines = (cfg.output_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["step"] for r in rows] == [0, 1]
    assert (cfg.output_dir / "pipeline" / "model_index.json").is_file()
    return [r["lcd_loss"] for r in rows]


def test_two_workers_match_one_worker(ray_cluster, tiny_run_inputs):
    single = run_losses(*tiny_run_inputs, workers=1)
    double = run_losses(*tiny_run_inputs, workers=2)
    assert single[0] > 0
    assert double[0] == pytest.approx(single[0], rel=1e-5)
    assert double[1] == pytest.approx(single[1], rel=1e-4)
    assert single[1] != single[0]  # the update changed the student
