"""`rglcd-pretrain-lrm scaling.local=true` (no Ray: the GPU path) and `--evaluate`, tiny
models; its config tree (--config FILE + key=value overrides)."""

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
        f"data.clip_dir={tiny_clip_dir(tmp_path / 'clip')}",
        f"data.pipeline_dir={save_tiny_sd_pipeline(tmp_path / 'sd')}",
        f"data.data_dir={tmp_path / 'data'}", "data.n_train=48", "data.n_eval=16",
    ]
    output = tmp_path / "lrm"
    (tmp_path / "tiny.yaml").write_text("tower: {width: 32, depth: 1, heads: 2}\n")
    report = pretrain([
        "--config", str(tmp_path / "tiny.yaml"), "scaling.local=true", "optim.steps=4",
        "optim.eval_every=2", "optim.batch_size=8", "optim.warmup_steps=1",
        f"output.dir={output}", *common,
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
        pretrain(["scaling.device=cuda"])
    assert "scaling.device=cuda needs scaling.local=true" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain(["--steps", "3"])  # the flags became config keys
    assert "settings are config keys, written key=value (e.g. optim.steps=...)" in capsys.readouterr().err


def test_the_default_tower_is_the_toy_worlds():
    """One source: the committed toy LRM was built with the default `tower` section."""
    from orchestration.pretrain_lrm_config import TowerConfig
    from rglcd.toy.paths import TOY_LRM_DIR

    saved = json.loads((TOY_LRM_DIR / "config.json").read_text())["latent"]
    assert {k: saved[k] for k in TowerConfig.model_fields} == TowerConfig().model_dump()


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
    common = [f"data.latents={latents}", f"data.clip_dir={tiny_clip_dir(tmp_path / 'clip')}"]
    report = pretrain([
        "scaling.local=true", "optim.steps=3", "optim.eval_every=3", "optim.batch_size=8",
        "tower.width=32", "tower.depth=1", "tower.heads=2", "tower.patch_size=2",
        "optim.warmup_steps=1", f"output.dir={output}", *common,
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
        pretrain([f"data.latents={latents}", f"data.clip_dir={tiny_clip_dir(tmp_path / 'clip')}"])
    assert "holding out 1 for retrieval" in capsys.readouterr().err
