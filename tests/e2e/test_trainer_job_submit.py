"""`ray job submit -- python trainer/run.py` on a `ray start --head` cluster (issue 5).

The entry point's successful path end to end: a short run leaves its pipeline, checkpoint,
metrics, samples and report (`trainer/run.py` attaches to the head instead of starting a
local instance; everything after `ray.init` is the same code).

The test owns its cluster (orchestration/local_head.py): `ray start --head --block` as a
child process in its own process group, on free loopback ports and its own temp dir, torn
down by signalling that process, never with `ray stop`, which would stop every cluster on
the machine. The repository is uploaded as the job's working_dir (`.venv/` and `outputs/`
excluded).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestration.local_head import private_head, submit_job
from rglcd.tiny_models import save_tiny_sd_pipeline
from rglcd.toy.data import ensure_toy_dataset
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="teardown reads /proc")


@pytest.fixture
def head_node():
    """A one-node cluster with dashboard (job server): yields the dashboard URL."""
    with private_head(num_cpus=4) as url:
        yield url


def test_ray_job_submit_runs_the_trainer(tmp_path, head_node):
    teacher = save_tiny_sd_pipeline(tmp_path / "teacher")
    ensure_toy_dataset(tmp_path / "data", "train", 16, seed=0)
    out = tmp_path / "out"  # absolute: the job's working directory is the uploaded copy
    overrides = [
        f"model.teacher={teacher}",
        f"data.train_path={tmp_path / 'data'}",
        "model.resolution=16",
        "reward.beta=0",  # plain LCD: no reward service needed
        f"output.root_dir={out}",
        "run_name=job",
        "lcd.max_steps=3",
        "lcd.global_batch_size=4",
        "output.log_every=1",
        "output.checkpoint_every=2",
        "output.sample_every=2",
    ]
    proc = submit_job(head_node, REPO_ROOT, ["python", "trainer/run.py", *overrides], tmp_path)
    logs = proc.stdout + proc.stderr
    job_lines = [line for line in logs.splitlines() if "packaging.py" not in line]

    assert proc.returncode == 0, "\n".join(job_lines[-60:])
    assert "succeeded" in logs
    run_dir = out / "job"
    assert f"Outputs: {run_dir}" in logs  # the job's own stdout, streamed back
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["loss"] > 0 for r in rows)
    assert {"time_data", "time_teacher", "time_student", "time_optimizer"} <= rows[0].keys()
    assert (run_dir / "pipeline" / "model_index.json").is_file()
    assert (run_dir / "pipeline" / "unet" / "config.json").is_file()
    assert (run_dir / "report.md").is_file()
    assert list((run_dir / "samples").glob("*.png"))
    checkpoints = [p for p in run_dir.glob("checkpoint_*") if (p / "manifest.json").is_file()]
    assert checkpoints, sorted(p.name for p in run_dir.iterdir())
