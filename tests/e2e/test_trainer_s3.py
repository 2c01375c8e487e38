"""`python trainer/run.py` with everything in object storage: an S3-compatible store (moto's
server, its own process on loopback) reached through the standard AWS environment.

The teacher is read from s3:// (copied once into the node's cache), the latent shards are read
by Ray Data from s3://, and every output (Ray Train checkpoints, metrics.jsonl, samples,
report.md, the exported pipeline) lands under output.root_dir=s3://...; nothing is written to
the working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rglcd import storage
from rglcd.tiny_models import save_tiny_sd_pipeline
from tests.conftest import REPO_ROOT
from tests.helpers import toy_latent_shards
from tests.helpers.s3_server import create_bucket, s3_server

pytestmark = pytest.mark.ray  # trainer/run.py starts a local Ray of its own

BUCKET = "rglcd-e2e"
STEPS = 3


def test_toy_lcd_run_reads_and_writes_only_object_storage(tmp_path, monkeypatch):
    teacher = save_tiny_sd_pipeline(tmp_path / "teacher")
    data = toy_latent_shards(tmp_path / "data", teacher, 12)
    work = tmp_path / "work"  # the run's working directory: must stay empty
    work.mkdir()
    with s3_server() as s3:
        for key, value in s3.items():
            monkeypatch.setenv(key, value)
        create_bucket(BUCKET, s3)
        storage.upload_dir(teacher, f"s3://{BUCKET}/models/teacher")
        storage.upload_dir(data, f"s3://{BUCKET}/data/latents")
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ID")}
        env |= {"RGLCD_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO_ROOT)}
        command = [
            sys.executable, str(REPO_ROOT / "trainer" / "run.py"),
            "--config", str(REPO_ROOT / "configs" / "toy-lcd.yaml"),
            f"model.teacher=s3://{BUCKET}/models/teacher", "model.resolution=16",
            f"data.train_path=s3://{BUCKET}/data/latents", f"lcd.max_steps={STEPS}",
            "lcd.global_batch_size=4", f"output.root_dir=s3://{BUCKET}/runs", "run_name=s3run",
            "output.log_every=1", "output.sample_every=2", "output.checkpoint_every=2",
            "data.validation_prompts=[a red circle]",
        ]
        proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                              timeout=480)
        assert proc.returncode == 0, proc.stderr[-4000:]
        run = f"s3://{BUCKET}/runs/s3run"
        assert f"Run storage: {run}" in proc.stdout
        rows = [json.loads(line) for line in storage.read_text(f"{run}/metrics.jsonl").splitlines()]
        assert [row["step"] for row in rows] == list(range(STEPS))
        assert "RG-LCD run report" in storage.read_text(f"{run}/report.md")
        assert storage.is_file(f"{run}/pipeline/model_index.json")
        assert storage.list_files(f"{run}/samples", "*.png")
        checkpoints = storage.list_dirs(run, "checkpoint_*")
        assert checkpoints and storage.is_file(f"{checkpoints[-1]}/manifest.json")
    assert list(work.iterdir()) == []  # nothing went to a local outputs/ folder
    cached = os.listdir(tmp_path / "cache" / "storage")
    assert [name for name in cached if name.endswith("-teacher")]  # one copy on this node
