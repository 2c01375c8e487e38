"""`python trainer/run.py` end to end: config errors fail fast, a short run leaves its outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from rglcd.tiny_models import save_tiny_sd_pipeline
from rglcd.toy.data import ensure_toy_dataset
from tests.conftest import REPO_ROOT

# Plain LCD (the default recipe adds the toy LRM, which needs the toy teacher's latents).
RUN = [sys.executable, str(REPO_ROOT / "trainer" / "run.py"), "--config",
       str(REPO_ROOT / "configs" / "toy-lcd.yaml")]


def run_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ID")}
    env |= {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    return env


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.teacher=/nonexistent/sd"], "model.teacher"),
        (["scaling.num_workers=3", "lcd.global_batch_size=4"], "divisible by scaling.num_workers"),
        (
            ["reward.mode=direct", "reward.beta=1", "reward.model=no-such-rm"],
            "reward.model='no-such-rm' is not in serve.scorers",
        ),
    ],
)
def test_bad_config_fails_before_ray(tmp_path, overrides, message):
    teacher = save_tiny_sd_pipeline(tmp_path / "teacher")
    args = [f"model.teacher={teacher}", f"output.root_dir={tmp_path / 'out'}", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(RUN + args, capture_output=True, text=True, env=run_env(), timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()  # nothing written, not even toy data
    assert time.perf_counter() - start < 60


def test_short_run_writes_pipeline_checkpoint_metrics_report(tmp_path):
    teacher = save_tiny_sd_pipeline(tmp_path / "teacher")
    ensure_toy_dataset(tmp_path / "data", "train", 16, seed=0)  # the toy scenes, fewer of them
    out = tmp_path / "out"
    args = [
        f"model.teacher={teacher}",
        f"data.train_path={tmp_path / 'data'}",
        "model.resolution=16",
        f"output.root_dir={out}",
        "run_name=e2e",
        "lcd.max_steps=3",
        "lcd.global_batch_size=4",
        "output.log_every=1",
        "output.checkpoint_every=2",
        "output.sample_every=2",
    ]
    proc = subprocess.run(
        RUN + args, capture_output=True, text=True, env=run_env(), timeout=600, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = out / "e2e"
    assert str(run_dir) in proc.stdout
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


def test_corrupt_resume_checkpoint_is_refused_before_ray(tmp_path):
    teacher = save_tiny_sd_pipeline(tmp_path / "teacher")
    broken = tmp_path / "out" / "rerun" / "checkpoint_2026-01-01_00-00-00.000000"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{ truncated")
    args = [f"model.teacher={teacher}", f"output.root_dir={tmp_path / 'out'}", "run_name=rerun"]
    proc = subprocess.run(RUN + args, capture_output=True, text=True, env=run_env(), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "manifest.json is not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout
