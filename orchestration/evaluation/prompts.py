"""Evaluation prompts: a text file, an HPSv2-benchmark-style JSON, or a toy-world split.

- plain text: one prompt a line (blank lines and lines starting with '#' skipped), group "all";
- JSON: ``{"anime": [...], "photo": [...]}`` as the HPSv2 benchmark groups its prompts by style
  (the benchmark's files are not shipped: a user supplies them), one group per key;
- ``toy:<split>``: the distinct captions of that toy split (``heldout`` = compositions never
  seen in training), in a fixed order, group = the split name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rglcd.toy.scenes import SPLITS, sample_scenes


@dataclass(frozen=True)
class PromptSet:
    """Prompts in evaluation order and the group of each."""

    prompts: list[str]
    groups: list[str]

    def __len__(self) -> int:
        return len(self.prompts)

    def group_names(self) -> list[str]:
        return list(dict.fromkeys(self.groups))


def _cap(items: list[str], limit: int | None) -> list[str]:
    return items if limit is None else items[:limit]


def _toy_prompts(split: str, limit: int | None) -> PromptSet:
    if split not in SPLITS:
        raise ValueError(f"prompts='toy:{split}': unknown toy split; use one of {SPLITS}")
    wanted = limit or 448  # the grammar has 448 captions; heldout has 64
    captions: list[str] = []
    for scene in sample_scenes(split, 20 * wanted, seed=0):
        if scene.caption not in captions:
            captions.append(scene.caption)
        if len(captions) == wanted:
            break
    return PromptSet(captions, [split] * len(captions))


def _json_prompts(path: Path, limit: int | None) -> PromptSet:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"prompt file {path} is not valid JSON: {err}") from None
    if isinstance(data, list):
        data = {"all": data}
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in data.values()
    ):
        raise ValueError(
            f"prompt file {path} must be a JSON object {{group: [prompt, ...]}} "
            "(HPSv2 benchmark style) or a list of prompts"
        )
    prompts, groups = [], []
    for group, items in data.items():
        chosen = _cap([p.strip() for p in items if p.strip()], limit)
        prompts += chosen
        groups += [str(group)] * len(chosen)
    return PromptSet(prompts, groups)


def load_prompts(source: str, limit: int | None = None) -> PromptSet:
    """Prompts from `source` (see module docstring); `limit` caps each group."""
    if source.startswith("toy:"):
        prompts = _toy_prompts(source.removeprefix("toy:"), limit)
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(
                f"prompt file {source!r} does not exist; pass a text file (one prompt a line), "
                "a JSON {group: [prompts]} or 'toy:<split>'"
            )
        if path.suffix.lower() == ".json":
            prompts = _json_prompts(path, limit)
        else:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            chosen = _cap([x for x in lines if x and not x.startswith("#")], limit)
            prompts = PromptSet(chosen, ["all"] * len(chosen))
    if not prompts.prompts:
        raise ValueError(f"no prompts found in {source!r}")
    return prompts
