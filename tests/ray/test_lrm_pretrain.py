"""LRM pretraining as a real Ray Train job (one worker, to keep the suite fast) with tiny models and toy data."""

from __future__ import annotations

import json

import torch
from transformers import CLIPModel

from orchestration.commands.pretrain_lrm import pretrain
from rglcd.tiny_models import save_tiny_sd_pipeline
from tests.helpers import tiny_clip_dir
from trainer.lrm import LatentRewardModel


def test_pretrain_job_trains_reports_and_writes_loadable_lrm(ray_cluster, tmp_path):
    clip_dir = tiny_clip_dir(tmp_path / "clip")
    pipeline_dir = save_tiny_sd_pipeline(tmp_path / "sd")
    output = tmp_path / "lrm"
    report = pretrain([
        "--steps", "8", "--eval-every", "4", "--batch-size", "16", "--num-workers", "1",
        "--width", "32", "--depth", "2", "--heads", "2", "--warmup-steps", "2",
        "--clip-dir", str(clip_dir), "--pipeline-dir", str(pipeline_dir),
        "--data-dir", str(tmp_path / "data"), "--n-train", "64", "--n-eval", "24",
        "--output", str(output), "--storage-path", str(tmp_path / "ray"), "--name", "lrm-test",
    ])

    assert report["step"] == 8
    losses = [entry["loss"] for entry in report["loss_history"]]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses)
    assert report["heldout_all_num_captions"] == 448
    assert 0.0 <= report["heldout_all_shape_accuracy"] <= 1.0
    for split in ("validation", "heldout", "heldout_all"):
        assert 0.0 <= report[f"{split}_top1"] <= report[f"{split}_top5"] <= 1.0
        assert report[f"{split}_num_latents"] == 24
    saved = json.loads((output / "pretrain_metrics.json").read_text())
    assert saved["step"] == 8

    lrm = LatentRewardModel.from_pretrained(output)
    assert lrm.config.latent.width == 32 and lrm.tokenizer is not None
    latents = torch.randn(2, 4, 16, 16)  # the tiny VAE maps 32x32 toy images to 16x16
    rewards = lrm.reward(latents, prompts=["a small red circle", "a large blue cross"])
    assert rewards.shape == (2,) and torch.isfinite(rewards).all()
    # the text tower stayed locked: identical to the CLIP it came from
    clip = CLIPModel.from_pretrained(clip_dir)
    torch.testing.assert_close(
        lrm.text_model.embeddings.token_embedding.weight,
        clip.text_model.embeddings.token_embedding.weight.half().float(),
    )


def test_pretrain_job_streams_latent_shards_through_ray_data(ray_cluster, tmp_path):
    from tests.unit.test_lrm_pretrain_local import _latent_shards

    latents = _latent_shards(tmp_path / "latents", shards=3, rows=12)
    report = pretrain([
        "--latents", str(latents), "--clip-dir", str(tiny_clip_dir(tmp_path / "clip")),
        "--steps", "5", "--eval-every", "5", "--batch-size", "8", "--num-workers", "1",
        "--width", "32", "--depth", "1", "--heads", "2", "--patch-size", "2",
        "--warmup-steps", "1", "--output", str(tmp_path / "lrm"),
        "--storage-path", str(tmp_path / "ray"), "--name", "lrm-stream-test",
    ])
    # 24 training rows in batches of 8: step 5 is in the second pass over the stream
    assert report["step"] == 5 and 0 < report["loss"] < 20
    assert report["peak_rss_mb"] > 0  # the worker's, reported for the memory benchmark
    assert report["heldout_num_latents"] == 12
    assert LatentRewardModel.from_pretrained(tmp_path / "lrm").config.latent_scaling_factor == 0.5
