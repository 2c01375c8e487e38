"""`rglcd-pretrain-lrm --local` (no Ray: the GPU path) and `--evaluate`, tiny models."""

from __future__ import annotations

import json

import pytest

from orchestration.commands.pretrain_lrm import pretrain
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
    report = pretrain([
        "--local", "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--width", "32",
        "--depth", "1", "--heads", "2", "--warmup-steps", "1", "--output", str(output), *common,
    ])
    assert report["step"] == 4 and [h["step"] for h in report["loss_history"]] == [2, 4]
    for name in ATTRIBUTES:  # each attribute's accuracy among captions differing in it only
        assert 0.0 <= report[f"heldout_all_{name}_accuracy"] <= 1.0
    assert json.loads((output / "pretrain_metrics.json").read_text())["step"] == 4
    assert LatentRewardModel.from_pretrained(output).config.latent.width == 32

    evaluated = pretrain(["--evaluate", str(output), *common])  # no training, no Ray
    assert set(evaluated) == {k for k in report if k.split("_")[0] in ("validation", "heldout")}
    assert evaluated["heldout_all_num_captions"] == 448


def test_device_other_than_cpu_needs_local(capsys):
    with pytest.raises(SystemExit):
        pretrain(["--device", "cuda"])
    assert "--device cuda needs --local" in capsys.readouterr().err


def _latent_shards(folder, shards: int = 3, rows: int = 12, scaling: float = 0.5):
    """rglcd-data-job's output layout: latent Parquet shards and manifest.json (no Ray Data)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from rglcd.codecs import encode_latents

    folder.mkdir(parents=True)
    captions = ["a red circle", "a blue square", "a green cross", "a small triangle"]
    generator = torch.Generator().manual_seed(0)
    names = []
    for shard in range(shards):
        latents = torch.randn(rows, 4, 4, 4, generator=generator)  # (N, C, h, w)
        table = pa.table({
            "latent": [encode_latents(lat[None].half()) for lat in latents],
            "caption": [captions[i % len(captions)] for i in range(rows)],
        })
        names.append(f"latents-{shard:05d}.parquet")
        pq.write_table(table, folder / names[-1])
    manifest = {"scaling_factor": scaling, "latent_shape": [4, 4, 4],
                "shards": [{"file": n, "rows": rows} for n in names]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_pretraining_on_data_job_latent_shards_holds_out_the_last_shard(tmp_path):
    latents = _latent_shards(tmp_path / "latents")
    output = tmp_path / "lrm-sd"
    common = ["--latents", str(latents), "--clip-dir", str(tiny_clip_dir(tmp_path / "clip"))]
    report = pretrain([
        "--local", "--steps", "3", "--eval-every", "3", "--batch-size", "8", "--width", "32",
        "--depth", "1", "--heads", "2", "--patch-size", "2", "--warmup-steps", "1",
        "--output", str(output), *common,
    ])
    assert report["heldout_num_latents"] == 12 and report["heldout_num_captions"] == 4
    assert 0.0 <= report["heldout_top1"] <= report["heldout_top5"] == 1.0  # 4 captions
    lrm = LatentRewardModel.from_pretrained(output)  # what lrm.checkpoint loads
    assert lrm.config.latent_scaling_factor == 0.5 and lrm.config.latent.latent_channels == 4
    evaluated = pretrain(["--evaluate", str(output), *common])
    assert evaluated["heldout_num_latents"] == 12


def test_latent_shards_need_one_to_hold_out(tmp_path, capsys):
    latents = _latent_shards(tmp_path / "latents", shards=1)
    with pytest.raises(SystemExit):
        pretrain(["--latents", str(latents), "--clip-dir", str(tiny_clip_dir(tmp_path / "clip"))])
    assert "holding out 1 for retrieval" in capsys.readouterr().err
