"""ImageReward v1.0 (BLIP ViT-L/16 + BERT with cross-attention + MLP head), docs/method.md §5, §7.

reward = (mlp(cls) - 0.16717362830052426) / 1.0333394966054072   (about -2..+2)
preprocessing: shortest side -> 224 bicubic, center crop 224, OpenAI CLIP mean/std.

The `image-reward` 1.5 package cannot live in the core environment: it pins timm==0.6.13
(dragging open-clip-torch down), needs fairscale, an undeclared `clip` module
(`clip-anytorch`) and `pkg_resources`, and its vendored BERT fails to import on transformers
5. So the package is imported lazily, only inside a process built from
`IMAGEREWARD_RUNTIME_ENV` (the reward service gives that Ray `runtime_env` to this one
deployment), or inside any separate environment where `IMAGEREWARD_PACKAGES` were installed.

The package's own `score()` goes through PIL and `no_grad`; here the same modules
(`blip.visual_encoder`, `blip.text_encoder`, `mlp`) run on tensor-preprocessed pixels, so the
reward keeps its gradient w.r.t. the images (the "score_gard" path of reward-guided training).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from reward_service.scorers.base import Scorer, check_batch, register_scorer
from reward_service.scorers.imagereward_blip import PromptTokens, med_config_path
from reward_service.scorers.preprocess import PreprocessRecipe, preprocess
from reward_service.scorers.similarity import freeze, resolve_device

if TYPE_CHECKING:  # annotations only: the config validates kinds through this registry
    from reward_service.config import ScorerConfig

INPUT_SIZE = 224
# Isolated environment for the ImageReward deployment. Ray builds it as a virtualenv that sees
# the base environment's packages (torch, Ray, this project) and installs the pins of
# imagereward-requirements.txt on top, so they shadow the core versions there only; the Docker
# image bakes the same environment (IMAGEREWARD_PYTHON_ENV names its interpreter) so that
# nothing is downloaded at run time. Every version is pinned: image-reward 1.5's BLIP imports
# `apply_chunking_to_forward` / `find_pruneable_heads_and_indices` from
# transformers.modeling_utils, gone after 4.46.x (4.57 no longer has them); its ReFL module
# imports diffusers at import time, and diffusers >= 0.39 needs a newer transformers (0.42
# also huggingface-hub >= 1.32, while transformers 4.46 needs < 1.0); `clip` imports
# pkg_resources, which setuptools 81 removed, and torch 2.14 needs setuptools >= 77.0.3 (a
# lower cap makes pip reinstall an older torch). Checked by
# `rglcd-rehearse` (tests/e2e/test_rehearse_real_path.py): import plus a real score.
REQUIREMENTS = Path(__file__).with_name("imagereward-requirements.txt")
IMAGEREWARD_PACKAGES = [
    line.strip()
    for line in REQUIREMENTS.read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
IMAGEREWARD_RUNTIME_ENV: dict[str, Any] = {
    "pip": {"packages": IMAGEREWARD_PACKAGES, "pip_check": False},
    "env_vars": {"HF_HUB_OFFLINE": "1"},
}
IMAGEREWARD_PYTHON_ENV = "RGLCD_IMAGEREWARD_PYTHON"  # interpreter of a pre-built environment
INSTALL_HINT = (
    "run this scorer in its own environment: the reward service gives its deployment the Ray "
    "runtime_env reward_service.scorers.imagereward.IMAGEREWARD_RUNTIME_ENV, or pip-install "
    "reward_service/scorers/imagereward-requirements.txt into an isolated virtualenv "
    "(never into the core environment, which needs transformers 5)"
)


def imagereward_runtime_env() -> dict[str, Any]:
    """A fresh copy of the Ray `runtime_env` for the ImageReward deployment: the pre-built
    environment's interpreter when $RGLCD_IMAGEREWARD_PYTHON names one (the Docker image),
    else the pip packages Ray installs when the deployment first starts on a node."""
    python = os.environ.get(IMAGEREWARD_PYTHON_ENV)
    if python:
        if not Path(python).is_file():
            raise ValueError(
                f"{IMAGEREWARD_PYTHON_ENV}={python} is not a file; point it at the python of "
                "an environment with reward_service/scorers/imagereward-requirements.txt "
                "installed, or unset it to let Ray pip-install them"
            )
        return {"py_executable": python, "env_vars": dict(IMAGEREWARD_RUNTIME_ENV["env_vars"])}
    return copy.deepcopy(IMAGEREWARD_RUNTIME_ENV)


def import_imagereward():
    """The `ImageReward` package, or an ImportError that says how to get it."""
    try:
        import ImageReward
    except ImportError as err:  # missing, or broken by transformers 5 / missing pkg_resources
        message = f"the image-reward package is not importable ({err}); {INSTALL_HINT}"
        raise ImportError(message) from err
    return ImageReward


def load_imagereward(checkpoint: str, med_config: str | None, device: torch.device):
    """`ImageReward.load` on local files only: the .pt checkpoint and its med_config.json.

    BLIP's tokenizer (`bert-base-uncased`) must already be in the local HF cache.
    """
    med_config = med_config_path(checkpoint, med_config)
    package = import_imagereward()
    return package.load(name=checkpoint, device=str(device), med_config=med_config)


@register_scorer
class ImageRewardScorer(Scorer):
    """Frozen ImageReward on tensor-preprocessed images; differentiable inside its environment."""

    kind = "imagereward"
    differentiable = True
    input_size = INPUT_SIZE
    needs_checkpoint = True
    options = ("med_config",)

    @classmethod
    def from_spec(cls, spec: ScorerConfig) -> ImageRewardScorer:
        return cls.from_checkpoint(
            spec.name, spec.checkpoint, spec.options.get("med_config"), spec.device
        )

    @classmethod
    def runtime_env(cls) -> dict[str, Any]:
        return imagereward_runtime_env()

    def __init__(self, name: str, model: torch.nn.Module, device: str = "auto") -> None:
        self.name = name
        self.device = resolve_device(device)
        self.model = freeze(model).to(self.device)
        self.recipe = PreprocessRecipe(size=INPUT_SIZE, mode="shortest-crop")
        self.tokens = PromptTokens(self.model.blip.tokenizer)

    @classmethod
    def from_checkpoint(
        cls, name: str, checkpoint: str, med_config: str | None = None, device: str = "auto"
    ) -> ImageRewardScorer:
        model = load_imagereward(checkpoint, med_config, resolve_device(device))
        return cls(name, model, device)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N,) normalised ImageReward scores (graph kept)."""
        check_batch(images, prompts)
        pixels = preprocess(images.to(self.device, torch.float32), self.recipe)
        image_embeds = self.model.blip.visual_encoder(pixels)  # (N, L, 1024)
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        ids, mask = self.tokens(prompts, self.device)
        text_output = self.model.blip.text_encoder(
            ids,
            attention_mask=mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_atts,
            return_dict=True,
        )
        cls_features = text_output.last_hidden_state[:, 0, :].float()  # (N, 768)
        rewards = self.model.mlp(cls_features).squeeze(-1)  # (N,)
        return ((rewards - self.model.mean) / self.model.std).float()
