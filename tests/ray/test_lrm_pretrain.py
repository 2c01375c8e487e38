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
        "optim.steps=8", "optim.eval_every=4", "optim.batch_size=16", "scaling.num_workers=1",
        "tower.width=32", "tower.depth=2", "tower.heads=2", "optim.warmup_steps=2",
        f"data.clip_dir={clip_dir}", f"data.pipeline_dir={pipeline_dir}",
        f"data.data_dir={tmp_path / 'data'}", "data.n_train=64", "data.n_eval=24",
        f"output.dir={output}", f"output.storage_path={tmp_path / 'ray'}", "output.name=lrm-test",
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
        f"data.latents={latents}", f"data.clip_dir={tiny_clip_dir(tmp_path / 'clip')}",
        "optim.steps=5", "optim.eval_every=5", "optim.batch_size=8", "scaling.num_workers=1",
        "tower.width=32", "tower.depth=1", "tower.heads=2", "tower.patch_size=2",
        "optim.warmup_steps=1", f"output.dir={tmp_path / 'lrm'}",
        f"output.storage_path={tmp_path / 'ray'}", "output.name=lrm-stream-test",
    ])
    # 24 training rows in batches of 8: step 5 is in the second pass over the stream
    assert report["step"] == 5 and 0 < report["loss"] < 20
    assert report["peak_rss_mb"] > 0  # the worker's, reported for the memory benchmark
    assert report["heldout_num_latents"] == 12
    assert LatentRewardModel.from_pretrained(tmp_path / "lrm").config.latent_scaling_factor == 0.5
