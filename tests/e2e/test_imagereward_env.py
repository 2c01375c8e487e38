"""ImageReward imports and scores in its own environment (tests/helpers/imagereward_env.py).

The environment is the deployment's: the pins of reward_service/scorers/imagereward-
requirements.txt over this environment's packages, as Ray's runtime_env `pip` and the Docker
image build it. Inside it, tests/helpers/imagereward_check.py imports ImageReward, builds its
real architecture with random weights, saves ImageReward.pt, and scores one image with the
package's `score()` and with this project's ImageRewardScorer loaded from the .pt.

Building it installs about 190 MB from PyPI and takes minutes: `make test` builds it once
(`make imagereward-env`, into .venv-imagereward) before the suite; a bare `pytest` builds it
there on first use. `pytest -m "not imagereward_env"` leaves out the tests that need it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.imagereward_env import imagereward_env

pytestmark = pytest.mark.imagereward_env
REPO_ROOT = Path(__file__).resolve().parents[2]
HELPER = REPO_ROOT / "tests" / "helpers" / "imagereward_check.py"


def test_imagereward_imports_and_scores_in_its_runtime_env(tmp_path_factory):
    python = imagereward_env()
    work = tmp_path_factory.mktemp("imagereward-work")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # the project is not installed there
    run = subprocess.run(
        [str(python), str(HELPER), str(work)], capture_output=True, text=True, timeout=900,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["transformers"] == "4.46.3"
    assert result["torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]
    # The package's PIL path and the scorer's tensor path agree on a 224 px image.
    assert result["scorer_score"] == pytest.approx(result["package_score"], abs=1e-4)
