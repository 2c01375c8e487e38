"""`python trainer/run.py`: config and checkpoint errors fail fast, before any Ray work.

The successful path runs in tests/e2e/test_rehearse_real_path.py (`ray job submit -- python
trainer/run.py` with two SD LRM recipes on a head node of the test's own).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rglcd.tiny_models import save_tiny_sd_pipeline
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
    proc = subprocess.run(RUN + args, capture_output=True, text=True, env=run_env(), timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()  # nothing written, not even toy data


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
