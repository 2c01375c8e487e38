"""The toy world's two rewards: the rule-based toy judge and the miniature CLIP.

toy-clip: the same `ClipFamilyScorer` as CLIPScore (raw cosine), on the transformers
`CLIPModel` + tokenizer saved at `TOY_MINICLIP_DIR`. Its `preprocess.json` (written by
`rglcd.toy.miniclip.write_preprocess`) gives the input size, mean/std and resize filter.

toy-judge: `rglcd.toy.judge.ToyJudge`, which reads the rendered scene back from the pixels and
checks it against the caption; not differentiable. The overall score is the reward, the
sub-scores go to `details`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from reward_service.scorers.base import ItemScore, Scorer, check_batch, register_scorer
from reward_service.scorers.clip_family import (
    ClipFamilyScorer,
    clip_input_size,
    recipe_from_processor,
)
from reward_service.scorers.preprocess import PreprocessRecipe, resize
from rglcd.toy.heldout_judge import HeldoutJudge
from rglcd.toy.judge import ToyJudge
from rglcd.toy.paths import TOY_MINICLIP_DIR
from rglcd.toy.scenes import IMAGE_SIZE, parse_caption

if TYPE_CHECKING:  # annotations only: the config validates kinds through this registry
    from reward_service.config import ScorerConfig

TOY_PREPROCESS_FILE = "preprocess.json"  # = rglcd.toy.miniclip.PREPROCESS_FILE


def toy_clip_recipe(directory: str | Path, default_size: int) -> PreprocessRecipe:
    """The mini CLIP's recipe from its `preprocess.json`, else from a HF processor config."""
    info_file = Path(directory) / TOY_PREPROCESS_FILE
    if not info_file.is_file():
        return recipe_from_processor(str(directory), default_size)
    info = json.loads(info_file.read_text(encoding="utf-8"))
    resize = str(info.get("resize", "bicubic"))
    return PreprocessRecipe(
        size=int(info.get("image_size", default_size)),
        mode="shortest-crop",  # toy images are square: same as the mini CLIP's plain resize
        mean=tuple(info["image_mean"]),
        std=tuple(info["image_std"]),
        interpolation="bilinear" if "bilinear" in resize else "bicubic",
    )


def toy_clip_scorer(name: str, directory: str | Path, device: str = "auto") -> ToyClipScorer:
    """The miniature CLIP as a CLIPScore-style reward (raw cosine), loaded offline."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ValueError(
            f"no miniature CLIP at {directory}; build it with "
            "`rglcd-build-toy-world` or set the scorer's checkpoint"
        )
    from transformers import AutoTokenizer, CLIPModel  # loaded with the mini CLIP only

    model = CLIPModel.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    recipe = toy_clip_recipe(directory, model.config.vision_config.image_size)
    return ToyClipScorer(name, model, tokenizer, recipe, use_logit_scale=False, device=device)


@register_scorer
class ToyClipScorer(ClipFamilyScorer):
    """The miniature CLIP as a CLIPScore-style reward; checkpoint defaults to the committed one."""

    kind = "toy-clip"
    input_size = IMAGE_SIZE

    @classmethod
    def from_spec(cls, spec: ScorerConfig) -> ToyClipScorer:
        return toy_clip_scorer(spec.name, spec.checkpoint or str(TOY_MINICLIP_DIR), spec.device)

    @classmethod
    def native_input_size(cls, spec: ScorerConfig) -> int:
        return clip_input_size(spec.checkpoint or TOY_MINICLIP_DIR, cls.input_size)


@register_scorer
class ToyJudgeScorer(Scorer):
    """`ToyJudge` as a scorer: reward = overall = sqrt(semantic * quality), 0-10, no gradient.

    Images of another size are resized to the toy world's 32x32 first (the judge's size
    threshold is in 32-px pixels). In the service path a prompt outside the toy grammar is
    that item's error; the other items are still judged.
    """

    kind = "toy-judge"
    default_batch_size = 32  # rule-based, cheap per image: big batches amortise the call
    differentiable = False
    input_size = IMAGE_SIZE

    def __init__(self, name: str = "toy-judge", judge=None) -> None:
        self.name = name
        self.judge = judge or ToyJudge()  # or any judge with the same calls (HeldoutJudge)

    @classmethod
    def from_spec(cls, spec: ScorerConfig) -> ToyJudgeScorer:
        return cls(spec.name)

    def _toy_size(self, images: torch.Tensor) -> torch.Tensor:
        return resize(images.detach().float(), IMAGE_SIZE, IMAGE_SIZE)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(N,) overall scores; raises ValueError on a prompt outside the toy grammar."""
        check_batch(images, prompts)
        return self.judge.scores(self._toy_size(images), prompts).float()

    def score_items(self, images: torch.Tensor, prompts: list[str]) -> list[ItemScore]:
        check_batch(images, prompts)
        errors: dict[int, str] = {}
        for i, prompt in enumerate(prompts):
            try:
                parse_caption(prompt)
            except ValueError as err:
                errors[i] = f"{self.name}: {err}"
        valid = [i for i in range(len(prompts)) if i not in errors]
        judged = []
        if valid:
            judged = self.judge.judge(self._toy_size(images[valid]), [prompts[i] for i in valid])
        by_index = dict(zip(valid, judged, strict=True))
        return [
            ItemScore(score=None, error=errors[i]) if i in errors else _item(by_index[i])
            for i in range(len(prompts))
        ]


def _item(result: dict) -> ItemScore:
    """One judge result -> score = overall, details = the sub-scores and what was detected."""
    details = {key: value for key, value in result.items() if key != "overall"}
    return ItemScore(score=float(result["overall"]), details=details)


@register_scorer
class HeldoutJudgeScorer(ToyJudgeScorer):
    """The held-out toy judge (rglcd/toy/heldout_judge.py): rules written independently of the
    toy judge's, for evaluations that report a judge no recipe trained on."""

    kind = "heldout-judge"
    default_batch_size = 32  # rule-based, cheap per image: big batches amortise the call

    @classmethod
    def from_spec(cls, spec: ScorerConfig) -> HeldoutJudgeScorer:
        return cls(spec.name, judge=HeldoutJudge())
