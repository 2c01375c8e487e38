"""ImageReward in its own environment, built the way Ray builds a `runtime_env` with `pip`.

Ray creates a virtualenv that sees the base interpreter's packages (a `--system-site-packages`
virtualenv, or a clone when Ray itself runs in a virtualenv) and pip-installs the listed
packages on top. This test does the same with the deployment's own pins
(reward_service/scorers/imagereward-requirements.txt, also baked into the Docker image): a
venv whose site-packages come first and this environment's after (a .pth file), `pip install`
of the pinned packages, then `import ImageReward` and a real score in that venv
(tests/helpers/imagereward_check.py).

It installs about 190 MB from PyPI and takes a few minutes, so it is marked `slow_env` and left
out of the default run:  pytest -m slow_env tests/slow_env
Set RGLCD_IMAGEREWARD_VENV to an existing directory to reuse an environment built before.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from reward_service.scorers.imagereward import IMAGEREWARD_PACKAGES, REQUIREMENTS

pytestmark = pytest.mark.slow_env
HELPER = Path(__file__).resolve().parents[1] / "helpers" / "imagereward_check.py"


def _isolated_env(path: Path) -> Path:
    """A venv over this environment's packages with the runtime_env's pins installed."""
    python = path / "bin" / "python"
    if (path / "pins.json").is_file():
        return python
    venv.EnvBuilder(with_pip=True).create(path)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    inherited = "\n".join(site.getsitepackages())
    (path / "lib" / version / "site-packages" / "_base_env.pth").write_text(inherited + "\n")
    install = [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)]
    subprocess.run(install, check=True)  # what the Dockerfile and the runtime_env's pip install
    (path / "pins.json").write_text(json.dumps(IMAGEREWARD_PACKAGES))
    return python


def test_imagereward_imports_and_scores_in_its_runtime_env(tmp_path_factory):
    env_dir = os.environ.get("RGLCD_IMAGEREWARD_VENV")
    env = Path(env_dir) if env_dir else tmp_path_factory.mktemp("imagereward-venv")
    python = _isolated_env(env)
    work = tmp_path_factory.mktemp("imagereward-work")
    run = subprocess.run(
        [str(python), str(HELPER), str(work)], capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["transformers"] == "4.46.3"
    assert result["torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]
    # The package's PIL path and the scorer's tensor path agree on a 224 px image.
    assert result["scorer_score"] == pytest.approx(result["package_score"], abs=1e-4)
