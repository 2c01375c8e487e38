"""Recipe names: `<teacher>-<method>[-<expert>]` (sd15-lcd, sd21-rglcd-lrm-vlm-judge,
sdxl-rglcd-lora-hpsv2.1); the expert part is the scorer's name in serve.scorers. A recipe
asked for by a name it had before this pattern is refused with its new name."""

from __future__ import annotations

from pathlib import Path

RENAMED_RECIPES = {  # old file name (configs/ or configs/methods/) -> new
    "toy.yaml": "toy-rglcd-lrm-toy-judge.yaml",
    "toy-direct-clip.yaml": "toy-rglcd-toy-clip.yaml",
    "toy-direct-clip-large-beta.yaml": "toy-rglcd-toy-clip-large-beta.yaml",
    "toy-lrm-toy-clip.yaml": "toy-rglcd-lrm-toy-clip.yaml",
    "toy-lrm-reward-clip.yaml": "toy-rglcd-lrm-reward-clip.yaml",
    "sdxl-lcm-lora.yaml": "sdxl-lcd-lora.yaml",
    "sdxl-rglcd-lora-hps.yaml": "sdxl-rglcd-lora-hpsv2.1.yaml",
    "lrm-vlm-judge-sd21.yaml": "sd21-rglcd-lrm-vlm-judge.yaml",
    "rglcd-hps.yaml": "rglcd-hpsv2.1.yaml",  # configs/methods/
    "rglcd-lrm-hps.yaml": "rglcd-lrm-hpsv2.1.yaml",  # configs/methods/
    **{f"{teacher}-rglcd{lrm}-hps.yaml": f"{teacher}-rglcd{lrm}-hpsv2.1.yaml"
       for teacher in ("sd15", "sd21", "sd21v") for lrm in ("", "-lrm")},
}


def renamed_recipe(path: str | Path) -> Path | None:
    """The recipe's new path when `path` names a recipe by its old name (and does not exist)."""
    path = Path(path)
    new = RENAMED_RECIPES.get(path.name)
    if new is None or path.exists() or not path.with_name(new).exists():
        return None
    return path.with_name(new)
