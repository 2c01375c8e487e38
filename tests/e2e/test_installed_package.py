"""The installed product: a wheel built from this tree, installed into a fresh virtualenv, runs
from a directory outside any checkout.

The virtualenv sees the development environment's third-party packages through a .pth file
(torch, Ray, diffusers are not installed again) but not the checkout: no PYTHONPATH, and the
editable install's finder is not loaded (a .pth inside a .pth-listed folder is not processed).
The recipes come from the wheel's package data; generated data goes to the cache directory or
the run's output folder, never into site-packages.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from orchestration.local_head import free_port
from orchestration.paths import REPO_ROOT

pytestmark = pytest.mark.slow  # builds a wheel and starts fresh interpreters

NOT_COPIED = (".venv*", ".git", "outputs", "build", "dist", "*.egg-info", "__pycache__",
              ".*_cache", "docs")


def _site_packages(env: Path) -> Path:
    return env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


@pytest.fixture(scope="module")
def product(tmp_path_factory) -> dict:
    """{bin, site, cwd, env}: the installed wheel's scripts, its site-packages, an empty working
    directory outside the checkout and the environment to run the scripts with."""
    root = tmp_path_factory.mktemp("product")
    src, dist, env_dir = root / "src", root / "dist", root / "venv"
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(*NOT_COPIED))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "-w", str(dist), str(src)]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("rglcd-*.whl")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    install = [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"),
               "install", "--no-deps", "--no-index", "-q", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    # Only now the development packages (pip must not see the editable rglcd beside the wheel).
    (_site_packages(env_dir) / "_dev_packages.pth").write_text("\n".join(site.getsitepackages()))
    cwd = root / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RAY_ADDRESS", "RAY_JOB_ID", "VIRTUAL_ENV")}
    env |= {"RGLCD_CACHE_DIR": str(root / "cache"), "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    return {"bin": env_dir / "bin", "site": _site_packages(env_dir), "cwd": cwd, "env": env,
            "cache": root / "cache"}


def _run(product: dict, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(product["bin"] / command[0]), *command[1:]], cwd=product["cwd"],
                          env=product["env"], capture_output=True, text=True, timeout=timeout)


def test_the_wheel_imports_from_site_packages_with_its_recipes_and_a_cache(product):
    probe = ("import rglcd, trainer.run; from rglcd.recipes import RECIPES_DIR; "
             "from rglcd.toy.paths import TOY_DATA_DIR; "
             "print(rglcd.__file__, trainer.run.__file__, RECIPES_DIR, TOY_DATA_DIR, sep='\\n')")
    done = _run(product, "python", "-c", probe)
    assert done.returncode == 0, done.stderr
    rglcd_file, run_file, recipes, toy_data = map(Path, done.stdout.split())
    site_packages = product["site"]
    assert rglcd_file.is_relative_to(site_packages) and run_file.is_relative_to(site_packages)
    assert recipes == site_packages / "rglcd" / "configs" and (recipes / "toy-rglcd-lrm-toy-judge.yaml").is_file()
    assert toy_data == product["cache"] / "toy-data"


def test_rglcd_train_finds_shipped_recipes_by_name(product):
    # Fails on purpose before Ray starts, on the data path the recipe (through its `extends:`
    # files) names: so the recipe was read from the package.
    sd15 = _run(product, "rglcd-train", "--config", "sd15-lcd")
    assert sd15.returncode == 2 and "data.train_path" in sd15.stderr, sd15.stderr
    unknown = _run(product, "rglcd-train", "--config", "no-such-recipe")
    assert unknown.returncode == 2 and "shipped recipe: " in unknown.stderr
    assert "sd15-lcd" in unknown.stderr and "toy-lcd" in unknown.stderr
    assert "Started a local Ray instance" not in sd15.stderr + unknown.stderr
    assert not any(product["cwd"].iterdir())


@pytest.mark.ray
def test_rglcd_train_runs_the_default_recipe_outside_the_checkout(product):
    before = sorted(p.name for p in product["site"].iterdir())
    out = product["cwd"] / "out"  # given relative: the driver's working directory, not a worker's
    done = _run(product, "rglcd-train", "lcd.max_steps=2", "output.root_dir=out",
                "output.sample_every=0", "output.log_every=1", f"serve.port={free_port()}", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "RG-LCD run finished" in done.stdout
    run_dir = next(out.glob("*/report.md")).parent
    assert (run_dir / "pipeline" / "model_index.json").is_file()
    assert (run_dir / "metrics.jsonl").is_file()
    assert any((out / "toy-data").rglob("*.parquet"))  # the run's own storage
    assert sorted(p.name for p in product["site"].iterdir()) == before
    assert not (product["site"].parent / "outputs").exists()
