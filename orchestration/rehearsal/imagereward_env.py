"""ImageReward's isolated environment, built the way Ray builds a `runtime_env` with `pip`.

Ray creates a virtualenv that sees the base interpreter's packages (a `--system-site-packages`
virtualenv, or a clone when Ray itself runs in a virtualenv) and pip-installs the listed
packages on top; the Docker image bakes the same. Here: a venv whose site-packages come first
and this environment's after (a .pth file), then `pip install -r` of the deployment's pins
(reward_service/scorers/imagereward-requirements.txt). About 190 MB from PyPI, minutes.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

from reward_service.scorers.imagereward import IMAGEREWARD_PACKAGES, REQUIREMENTS
from rglcd.cache import cache_dir

REUSE_ENV = "RGLCD_IMAGEREWARD_VENV"  # where the environment lives (`make test` sets it)


def imagereward_env(path: Path | None = None) -> Path:
    """The python of an environment with ImageReward's pins at `path` (default $REUSE_ENV,
    else imagereward-venv in the user's cache), built there first unless its pins match."""
    path = Path(path or os.environ.get(REUSE_ENV) or cache_dir() / "imagereward-venv")
    python = path / "bin" / "python"
    if (path / "pins.json").is_file() and json.loads(
        (path / "pins.json").read_text()
    ) == IMAGEREWARD_PACKAGES:
        return python
    venv.EnvBuilder(with_pip=True).create(path)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    inherited = "\n".join(site.getsitepackages())
    (path / "lib" / version / "site-packages" / "_base_env.pth").write_text(inherited + "\n")
    install = [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)]
    subprocess.run(install, check=True)
    (path / "pins.json").write_text(json.dumps(IMAGEREWARD_PACKAGES))
    return python


if __name__ == "__main__":  # `make imagereward-env`: build it (or find it current) at argv[1]
    print(imagereward_env(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
