"""`orchestration/pretrain_lrm.py --local` (no Ray: the GPU path) and `--evaluate`, tiny models."""

from __future__ import annotations

import json

import pytest

from orchestration.pretrain_lrm import main
from rglcd.tiny_models import save_tiny_sd_pipeline
from tests.helpers import tiny_clip_dir
from trainer.lrm import LatentRewardModel

ATTRIBUTES = ("size", "colour", "shape", "bg")


def test_local_pretraining_and_evaluate_only(tmp_path):
    common = [
        "--clip-dir", str(tiny_clip_dir(tmp_path / "clip")),
        "--pipeline-dir", str(save_tiny_sd_pipeline(tmp_path / "sd")),
        "--data-dir", str(tmp_path / "data"), "--n-train", "48", "--n-eval", "16",
    ]
    output = tmp_path / "lrm"
    report = main([
        "--local", "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--width", "32",
        "--depth", "1", "--heads", "2", "--warmup-steps", "1", "--output", str(output), *common,
    ])
    assert report["step"] == 4 and [h["step"] for h in report["loss_history"]] == [2, 4]
    for name in ATTRIBUTES:  # each attribute's accuracy among captions differing in it only
        assert 0.0 <= report[f"heldout_all_{name}_accuracy"] <= 1.0
    assert json.loads((output / "pretrain_metrics.json").read_text())["step"] == 4
    assert LatentRewardModel.from_pretrained(output).config.latent.width == 32

    evaluated = main(["--evaluate", str(output), *common])  # no training, no Ray
    assert set(evaluated) == {k for k in report if k.split("_")[0] in ("validation", "heldout")}
    assert evaluated["heldout_all_num_captions"] == 448


def test_device_other_than_cpu_needs_local(capsys):
    with pytest.raises(SystemExit):
        main(["--device", "cuda"])
    assert "--device cuda needs --local" in capsys.readouterr().err
