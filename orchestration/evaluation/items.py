"""The items of an evaluation: one (prompt, seed) each, and where each row's image of it goes.

Item k = s*P + p is prompt p with the s-th seed, in every row (table row = model x steps).
Images are saved as ``images/<row>/seed<seed>/<group>/<idx:05d>.<jpg|png>``, `idx` the
prompt's position in its group: with the HPSv2 benchmark's prompts (groups = its four
styles), each ``images/<row>/seed<seed>`` folder is in the benchmark's own layout
(``<dir>/<style>/<idx:05d>.jpg``, the paper's Table 1 protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestration.evaluation.generation import sample_seed
from orchestration.evaluation.prompts import PromptSet


@dataclass(frozen=True)
class Item:
    index: int  # k = s*P + p
    prompt: str
    group: str
    group_index: int  # the prompt's position within its group
    seed: int  # the evaluation seed (cfg.seeds[s])
    noise_seed: int  # the generator seed of its initial noise (generation.sample_seed)


def make_items(prompt_set: PromptSet, seeds: list[int]) -> list[Item]:
    position, counts = [], {}
    for group in prompt_set.groups:
        position.append(counts.get(group, 0))
        counts[group] = position[-1] + 1
    n = len(prompt_set)
    return [
        Item(s * n + p, prompt_set.prompts[p], prompt_set.groups[p], position[p], seed,
             sample_seed(seed, p))
        for s, seed in enumerate(seeds) for p in range(n)
    ]


def image_name(row: str, item: Item, image_format: str) -> str:
    """The image's path relative to the evaluation's output folder."""
    return f"images/{row}/seed{item.seed}/{item.group}/{item.group_index:05d}.{image_format}"
