"""The shipped recipes: `configs/` of the repository, installed with the package.

The wheel installs `configs/` as package data `rglcd/configs` (setup.py maps it); a checkout
reads its own `configs/`. A command's `--config` takes a path, or a shipped recipe by name from
any directory: `sd15-lcd`, `sd15-lcd.yaml`, `configs/sd15-lcd.yaml` and `eval/sd15` all work.
"""

from __future__ import annotations

from pathlib import Path

from rglcd.paths import PACKAGES_ROOT
from rglcd.recipe_names import renamed_recipe

_INSTALLED = PACKAGES_ROOT / "rglcd" / "configs"
RECIPES_DIR = _INSTALLED if _INSTALLED.is_dir() else PACKAGES_ROOT / "configs"
# The trainer's default: the full method (RG-LCD + LRM, toy-judge expert) on the toy world.
DEFAULT_RECIPE = RECIPES_DIR / "toy-rglcd-lrm-toy-judge.yaml"


def resolve_recipe(name: str | Path) -> Path:
    """An existing file as given, else the shipped recipe of that name (or of its former name,
    which its reader then refuses with the new one); else the name as given (its reader then
    says that it does not exist and lists the shipped recipes)."""
    path = Path(name).expanduser()
    if path.is_file() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    if not parts:
        return path
    relative = Path(*parts)
    candidates = (RECIPES_DIR / relative, RECIPES_DIR / f"{relative}.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    for candidate in candidates:
        if renamed_recipe(candidate) is not None:
            return candidate
    return path


def shipped_recipes() -> list[str]:
    """Names of the top-level shipped recipes (what `--config NAME` accepts)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
