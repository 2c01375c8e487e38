"""`rglcd-pretrain-lrm --latents s3://... --output s3://...` (a local run, no Ray) against an
S3-compatible store on loopback (moto's server): the shards are streamed from the store and
the LRM lands there."""

from __future__ import annotations

import json

from orchestration.commands.pretrain_lrm import pretrain
from rglcd import storage
from tests.helpers import tiny_clip_dir
from tests.unit.test_lrm_pretrain_local import _latent_shards


def test_local_pretraining_reads_and_writes_object_storage(s3_bucket, tmp_path):
    latents = storage.join(s3_bucket, "latents")
    storage.upload_dir(_latent_shards(tmp_path / "latents"), latents)
    output = storage.join(s3_bucket, "lrm")
    report = pretrain([
        "scaling.local=true", f"data.latents={latents}", f"output.dir={output}",
        f"data.clip_dir={tiny_clip_dir(tmp_path / 'clip')}", "optim.steps=3",
        "optim.eval_every=3", "optim.batch_size=8", "tower.width=32", "tower.depth=1",
        "tower.heads=2", "tower.patch_size=2", "optim.warmup_steps=1",
    ])
    assert report["step"] == 3 and report["heldout_num_latents"] == 12
    saved = json.loads(storage.read_text(storage.join(output, "pretrain_metrics.json")))
    assert saved["step"] == 3
    assert storage.is_file(storage.join(output, "config.json"))
