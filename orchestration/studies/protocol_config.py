"""The protocol's typed config and its lock (docs/protocol.md).

`configs/protocol/protocol.yaml` names the splits (prompt files and sampling seeds), the
frozen recipes, the training seeds, the judges and the comparisons. `lock.json` beside it
holds the sha256 of that file and of every file it names; the test split is run only when
they all still match, so nothing is chosen after its data has been seen.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import Field, model_validator

from orchestration.paths import REPO_ROOT
from rglcd.config_base import StrictModel

PROTOCOL_FILE = REPO_ROOT / "configs" / "protocol" / "protocol.yaml"
TEACHER = "teacher"  # the built-in model of comparisons: the toy teacher, DDIM + CFG 7.5


class SplitSpec(StrictModel):
    prompts: str = Field(description="Text file, one prompt a line, relative to the repo root.")
    sampling_seeds: list[int] = Field(min_length=1)


class RecipeSpec(StrictModel):
    name: str
    config: str
    overrides: list[str] = Field(default_factory=list)


class ProtocolConfig(StrictModel):
    training_seeds: list[int] = Field(min_length=3, description="At least 3 runs a recipe.")
    judges: list[str] = Field(min_length=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    splits: dict[str, SplitSpec]
    recipes: list[RecipeSpec] = Field(min_length=1)
    comparisons: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ProtocolConfig:
        if set(self.splits) != {"selection", "test"}:
            raise ValueError(f"splits must be exactly selection and test, got {sorted(self.splits)}")
        prompts = {k: set(read_prompts(v.prompts)) for k, v in self.splits.items()}
        seeds = {k: set(v.sampling_seeds) for k, v in self.splits.items()}
        if prompts["selection"] & prompts["test"] or seeds["selection"] & seeds["test"]:
            raise ValueError("the selection and test splits share prompts or sampling seeds; "
                             "make them disjoint")
        names = [r.name for r in self.recipes]
        if len(set(names)) != len(names) or TEACHER in names:
            raise ValueError(f"recipe names must be unique and not {TEACHER!r}: {names}")
        for text in self.comparisons:
            for side in text.split(":"):
                name, _, steps = side.partition("@")
                if name not in {*names, TEACHER} or not steps.isdigit():
                    raise ValueError(f"comparison {text!r}: write A@steps:B@steps with A, B in "
                                     f"{[*names, TEACHER]}")
        return self

    def parsed_comparisons(self) -> list[tuple[tuple[str, int], tuple[str, int]]]:
        out = []
        for text in self.comparisons:
            (a, n), (b, m) = (side.partition("@")[::2] for side in text.split(":"))
            out.append(((a, int(n)), (b, int(m))))
        return out

    def frozen_files(self) -> list[str]:
        """Every file the protocol's outcome depends on, relative to the repo root."""
        files = [str(PROTOCOL_FILE.relative_to(REPO_ROOT))]
        files += [s.prompts for s in self.splits.values()]
        return files + [r.config for r in self.recipes]


def read_prompts(path: str) -> list[str]:
    lines = (REPO_ROOT / path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def load_protocol(path: Path = PROTOCOL_FILE) -> ProtocolConfig:
    return ProtocolConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def file_hashes(cfg: ProtocolConfig) -> dict[str, str]:
    return {f: hashlib.sha256((REPO_ROOT / f).read_bytes()).hexdigest()
            for f in cfg.frozen_files()}


def lock_path(path: Path = PROTOCOL_FILE) -> Path:
    return path.with_name("lock.json")


def write_lock(cfg: ProtocolConfig, path: Path = PROTOCOL_FILE) -> Path:
    lock = lock_path(path)
    lock.write_text(json.dumps(file_hashes(cfg), indent=2) + "\n", encoding="utf-8")
    return lock


def check_lock(cfg: ProtocolConfig, path: Path = PROTOCOL_FILE) -> None:
    """ValueError naming every frozen file that changed since `--freeze` (or a missing lock)."""
    lock = lock_path(path)
    if not lock.is_file():
        raise ValueError(f"no {lock}: freeze the protocol first (--freeze) before the test split")
    frozen = json.loads(lock.read_text(encoding="utf-8"))
    now = file_hashes(cfg)
    changed = sorted(f for f in set(frozen) | set(now) if frozen.get(f) != now.get(f))
    if changed:
        raise ValueError(f"frozen files changed since the lock: {changed}. The test split runs "
                         "only on the frozen protocol; a change needs a new, dated protocol.")
