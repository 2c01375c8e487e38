"""DDP correctness on the shared cluster: 1 and 2 gloo workers see the same global batches.

The 2-worker run distils the tiny teacher for 2 steps at global batch 4 (2 rows per worker)
with the settings of the 1-worker `baseline` run (tests/ray/conftest.py). Step 0's loss
checks the data sharding and per-sample draws; step 1's loss depends on the first update, so
it also checks that DDP averages the gradients like one worker's full-batch gradient.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.tiny_runs import metrics_rows, tiny_run_config
from trainer.run import build_trainer


def test_two_workers_match_one_worker(ray_cluster, trainer_inputs, baseline):
    _, single_rows = baseline
    cfg = tiny_run_config(
        trainer_inputs, "ddp-2", 2, "scaling.num_workers=2", "output.checkpoint_every=0"
    )
    build_trainer(cfg).fit()
    rows = metrics_rows(cfg)
    assert [r["step"] for r in rows] == [0, 1]
    assert (Path(cfg.output_dir) / "pipeline" / "model_index.json").is_file()
    single = [r["lcd_loss"] for r in single_rows[:2]]
    double = [r["lcd_loss"] for r in rows]
    assert single[0] > 0
    assert double[0] == pytest.approx(single[0], rel=1e-5)
    assert double[1] == pytest.approx(single[1], rel=1e-4)
    assert single[1] != single[0]  # the update changed the student
