"""The commands users start: every `[project.scripts]` entry point names a callable, each
command module also runs as `python -m`, and `python trainer/run.py` imports cleanly."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

from orchestration.paths import REPO_ROOT


def _scripts() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def test_every_entry_point_target_is_callable():
    scripts = _scripts()
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr, None)), (
            f"[project.scripts] {name} = {target!r}: no callable {attr} in {module}")


def test_every_command_module_has_an_entry_point_and_runs_with_python_m():
    targets = {t.partition(":")[0] for t in _scripts().values()}
    commands = {f"orchestration.commands.{p.stem}"
                for p in (REPO_ROOT / "orchestration" / "commands").glob("[!_]*.py")}
    assert commands <= targets, f"add [project.scripts] entries for {sorted(commands - targets)}"
    for module in targets - {"trainer.run"}:
        source = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
        assert 'if __name__ == "__main__":' in source, f"{module} does not run with python -m"


def _module_names(folder: Path) -> set[str]:
    """Top-level names the folder's modules and packages take when it is on sys.path."""
    modules = {p.stem for p in folder.glob("*.py")}
    packages = {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    return modules | packages


def test_no_trainer_module_shadows_a_top_level_one():
    # `python trainer/run.py` puts trainer/ first on sys.path, so a trainer/ray.py or
    # trainer/torch.py would be imported for every `import ray` / `import torch`.
    names = _module_names(REPO_ROOT / "trainer")
    clashes = sorted(n for n in names
                     if n in sys.stdlib_module_names or importlib.util.find_spec(n) is not None)
    assert not clashes, f"rename these trainer/ modules: {clashes}"
