"""The commands users start: `python trainer/run.py` imports cleanly from any directory."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


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
