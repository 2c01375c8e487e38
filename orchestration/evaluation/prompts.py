"""Evaluation prompts: a text file, an HPSv2-benchmark-style JSON, or a toy-world split.

- plain text: one prompt a line (blank lines and lines starting with '#' skipped), group "all";
- JSON: ``{"anime": [...], "photo": [...]}`` as the HPSv2 benchmark groups its prompts by style
  (the benchmark's files are not shipped: a user supplies them), one group per key;
- ``hpsv2:<dir>``: the HPSv2 benchmark's test prompts as its repository ships them, one JSON
  list per style (``<dir>/anime.json``, ``concept-art.json``, ``paintings.json``,
  ``photo.json``; 800 prompts each), groups = the four styles in that order: the paper's
  Table 1 protocol (one image per prompt, HPSv2.1 averaged per style);
- ``toy:<split>``: the distinct captions of that toy split (``heldout`` = compositions never
  seen in training), in a fixed order, group = the split name.

Files may be local paths or object-store URIs (rglcd/storage.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rglcd import storage
from rglcd.toy.scenes import SPLITS, sample_scenes

HPSV2_STYLES = ("anime", "concept-art", "paintings", "photo")


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


def _hpsv2_prompts(folder: str, limit: int | None) -> PromptSet:
    styles = {}
    for style in HPSV2_STYLES:
        file = storage.join(folder, f"{style}.json")
        if not storage.is_file(file):
            raise ValueError(
                f"prompts='hpsv2:{folder}' has no {style}.json; point it at a folder holding the "
                f"HPSv2 benchmark's {', '.join(s + '.json' for s in HPSV2_STYLES)}"
            )
        styles[style] = json.loads(storage.read_text(file))
    return _json_data(styles, f"hpsv2:{folder}", limit)


def _json_prompts(path: str, limit: int | None) -> PromptSet:
    try:
        data = json.loads(storage.read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"prompt file {path} is not valid JSON: {err}") from None
    return _json_data(data, path, limit)


def _json_data(data, path: str, limit: int | None) -> PromptSet:
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
    elif source.startswith("hpsv2:"):
        prompts = _hpsv2_prompts(source.removeprefix("hpsv2:"), limit)
    else:
        if not storage.is_file(source):
            raise ValueError(
                f"prompt file {source!r} does not exist; pass a text file (one prompt a line), "
                "a JSON {group: [prompts]}, 'hpsv2:<dir>' or 'toy:<split>'"
            )
        if source.lower().endswith(".json"):
            prompts = _json_prompts(source, limit)
        else:
            lines = [line.strip() for line in storage.read_text(source).splitlines()]
            chosen = _cap([x for x in lines if x and not x.startswith("#")], limit)
            prompts = PromptSet(chosen, ["all"] * len(chosen))
    if not prompts.prompts:
        raise ValueError(f"no prompts found in {source!r}")
    return prompts
