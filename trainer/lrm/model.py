"""Latent proxy reward model (LRM): CLIP with its image tower replaced by a latent tower.

Paper section 4.2 and appendix B ("Details for integrating an LRM"), docs/method.md §3.

Inputs are the *scaled* latents the RG-LCD step works with, ``z = vae.encode(x)
.latent_dist.sample() * scaling_factor`` (docs/method.md §1): the real latent ``z0`` and the
consistency outputs ``pred`` / ``z1`` / ``z2`` all live in that space, so the student's reward
term and the online finetuning need no rescaling. (The reference code feeds ``pred / sf``;
we do not.) ``config.latent_scaling_factor`` records the teacher VAE's factor for reference.

Latent tower: a small pre-norm ViT over ``patch_size`` x ``patch_size`` latent patches with a
class token and *fixed 2-D sine-cosine positional embeddings* computed for the grid at hand.
The reference code learns a 64x64-only positional table; a sincos table is defined for every
grid, so the same weights score 8x8, 16x16 or 64x96 latents with no interpolation and the
offset between neighbouring patches (always ``8 * patch_size`` pixels of the decoded image) is
encoded identically at every resolution. Latents whose sides are not multiples of the patch
size are zero-padded on the right/bottom (0 is the mean of the scaled latent distribution).
A ViT keeps the reference architecture (ViT on 4-channel latents) and gives the paper's
"last 2 blocks" a direct meaning; a conv tower with global pooling would also be resolution
free but its "blocks" mix resolutions.

Text tower: a transformers ``CLIPTextModel`` initialised from a pretrained CLIP text encoder
(``from_clip``), pooled at the EOS token, plus a bias-free ``text_projection`` (copied from the
CLIP when shapes allow). Learnable ``logit_scale`` initialised to ln(1/0.07), clamped at
ln(100) as in CLIP.

Reward: ``reward(...)`` is the plain cosine ``cos(latent_emb, text_emb)`` in [-1, 1] per row
(like HPSv2's raw cosine). It feeds eq. 12 as ``P = softmax(cos / tau_L)``; tau_L
(``lrm.tau_l`` in the trainer config, 0.01 by default) plays the role the reference code gives
``1 / exp(logit_scale)`` (about 1/100 for a trained CLIP), but stays a fixed hyperparameter.
The learnable logit scale is used only by the contrastive pretraining loss; it does not enter
eq. 12 and so is frozen during online finetuning (``freeze.finetune_groups``). ``logits(...)``
returns ``exp(logit_scale) * cos`` (the CLIP logit) for diagnostics.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, CLIPModel, CLIPTextConfig, CLIPTextModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100.0)


@dataclass
class LatentTowerConfig:
    """Shape of the latent ViT, as saved in an LRM's config.json. No defaults: a new LRM takes
    them from `rglcd-pretrain-lrm`'s `tower` section (orchestration/pretrain_lrm_config.py),
    a saved one from its file."""

    latent_channels: int
    patch_size: int
    width: int
    depth: int
    heads: int
    mlp_ratio: float

    def __post_init__(self) -> None:
        if self.width % 4 or self.width % self.heads:
            raise ValueError(
                f"latent tower width={self.width} must be divisible by 4 (2-D sincos) and by "
                f"heads={self.heads}; pick e.g. width=128, heads=4."
            )
        if min(self.patch_size, self.depth, self.heads, self.latent_channels) < 1:
            raise ValueError("latent tower patch_size, depth, heads, latent_channels must be >= 1.")


@dataclass
class LRMArchitecture:
    """Everything needed to rebuild an LRM; saved as ``config.json`` beside the weights."""

    text: dict  # CLIPTextConfig.to_dict()
    embed_dim: int
    latent: LatentTowerConfig
    logit_scale_init: float = LOGIT_SCALE_INIT
    latent_scaling_factor: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LRMArchitecture:
        data = dict(data)
        data["latent"] = LatentTowerConfig(**data["latent"])
        return cls(**data)


def sincos_2d_position_embedding(height: int, width: int, dim: int) -> torch.Tensor:
    """(height*width, dim) fixed 2-D sine-cosine embedding of a patch grid (MAE-style).

    Half the channels encode the row index, half the column index, each as [sin, cos] over
    dim/4 geometric frequencies 1/10000^(k/(dim/4)).
    """
    assert dim % 4 == 0, dim
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float64),
        torch.arange(width, dtype=torch.float64),
        indexing="ij",
    )
    parts = []
    for grid in (rows, cols):
        angles = grid.reshape(-1, 1) * omega  # (h*w, dim/4)
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


class SelfAttention(nn.Module):
    """Multi-head self-attention over (B, T, D) tokens (no mask: the latent grid is complete)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, T, D/heads)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LatentTower(nn.Module):
    """ViT over latent patches: (B, C, H, W) scaled latents -> (B, width) pooled class token."""

    def __init__(self, config: LatentTowerConfig):
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = nn.Conv2d(c.latent_channels, c.width, c.patch_size, stride=c.patch_size)
        self.class_token = nn.Parameter(torch.randn(1, 1, c.width) * 0.02)
        self.norm_pre = nn.LayerNorm(c.width)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.width, c.heads, c.mlp_ratio) for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.width)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 4 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"latents must be (B, {self.config.latent_channels}, H, W) scaled VAE latents; "
                f"got shape {tuple(latents.shape)}."
            )
        p = self.config.patch_size
        pad_h, pad_w = -latents.shape[2] % p, -latents.shape[3] % p
        if pad_h or pad_w:
            latents = F.pad(latents, (0, pad_w, 0, pad_h))
        x = self.patch_embed(latents.to(self.patch_embed.weight.dtype))  # (B, D, h, w)
        _, dim, h, w = x.shape
        pos = sincos_2d_position_embedding(h, w, dim).to(x.device, x.dtype)
        tokens = x.flatten(2).transpose(1, 2) + pos  # (B, h*w, D)
        cls = self.class_token.expand(tokens.shape[0], -1, -1)
        tokens = self.norm_pre(torch.cat([cls, tokens], dim=1))
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens[:, 0])


class LatentRewardModel(nn.Module):
    """CLIP-style LRM: ``reward(latents, prompts) -> (N,)`` cosine in [-1, 1] (module doc)."""

    def __init__(self, config: LRMArchitecture, tokenizer=None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.latent_tower = LatentTower(config.latent)
        self.latent_projection = nn.Linear(config.latent.width, config.embed_dim, bias=False)
        self.text_model = CLIPTextModel(CLIPTextConfig.from_dict(config.text))
        hidden = self.text_model.config.hidden_size
        self.text_projection = nn.Linear(hidden, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_clip(
        cls,
        text_model: CLIPTextModel,
        tokenizer=None,
        *,
        latent: LatentTowerConfig,
        text_projection: nn.Linear | None = None,
        latent_scaling_factor: float | None = None,
    ) -> LatentRewardModel:
        """A fresh LRM whose text tower (and text projection, if given) copy a pretrained CLIP."""
        if text_projection is not None:
            embed_dim = text_projection.out_features
        else:
            embed_dim = text_model.config.projection_dim or text_model.config.hidden_size
        config = LRMArchitecture(
            text=json.loads(text_model.config.to_json_string()),  # JSON-normalised, as saved
            embed_dim=embed_dim,
            latent=latent,
            latent_scaling_factor=latent_scaling_factor,
        )
        model = cls(config, tokenizer=tokenizer)
        model.text_model.load_state_dict(text_model.state_dict())
        if text_projection is not None:
            model.text_projection.load_state_dict(text_projection.state_dict())
        return model

    @classmethod
    def from_clip_dir(cls, clip_dir: str | Path, **kwargs) -> LatentRewardModel:
        """Initialise from a saved transformers ``CLIPModel`` folder (+ tokenizer), offline."""
        clip_dir = Path(clip_dir)
        if not (clip_dir / CONFIG_NAME).exists():
            raise ValueError(f"{clip_dir} holds no CLIPModel (config.json missing).")
        clip = CLIPModel.from_pretrained(clip_dir, local_files_only=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(clip_dir, local_files_only=True)
        return cls.from_clip(
            clip.text_model, tokenizer, text_projection=clip.text_projection, **kwargs
        )

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` (optionally cast, e.g. fp16), tokenizer."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, directory / WEIGHTS_NAME)
        text = json.dumps(self.config.to_dict(), indent=2, default=str)
        (directory / CONFIG_NAME).write_text(text, encoding="utf-8")
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, dtype: torch.dtype = torch.float32
    ) -> LatentRewardModel:
        """Load what ``save_pretrained`` wrote (local files only), weights cast to `dtype`."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).exists() or not (directory / WEIGHTS_NAME).exists():
            raise ValueError(
                f"{directory} is not a saved LRM (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                "create one with rglcd-pretrain-lrm or save_pretrained()."
            )
        config = LRMArchitecture.from_dict(json.loads((directory / CONFIG_NAME).read_text()))
        tokenizer = None
        if (directory / TOKENIZER_DIR).is_dir():
            tokenizer = AutoTokenizer.from_pretrained(
                directory / TOKENIZER_DIR, local_files_only=True
            )
        model = cls(config, tokenizer=tokenizer)
        state = {k: v.to(dtype) for k, v in load_file(directory / WEIGHTS_NAME).items()}
        model.load_state_dict(state)
        return model.to(dtype).eval()

    # ---- towers -------------------------------------------------------------------------
    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Prompts -> {input_ids, attention_mask} padded to the longest prompt of the batch.

        The reward reads only the EOS-pooled output, which padding after EOS cannot change
        (causal attention), so padding to the batch's longest prompt instead of the
        tokenizer's max length (77) gives the same rewards for less compute.
        """
        if self.tokenizer is None:
            raise ValueError("this LRM has no tokenizer; pass input_ids instead of prompts.")
        tokens = self.tokenizer(
            list(prompts), padding="longest", truncation=True, return_tensors="pt"
        )
        device = self.logit_scale.device
        return {k: tokens[k].to(device) for k in ("input_ids", "attention_mask")}

    def embed_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) scaled latents -> (N, E) unit-norm embeddings."""
        return F.normalize(self.latent_projection(self.latent_tower(latents)), dim=-1)

    def embed_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, L) token ids -> (N, E) unit-norm embeddings (EOS-pooled, projected)."""
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at 100 as in CLIP."""
        return self.logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()

    def forward(
        self,
        latents: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(latent_emb (N, E), text_emb (K, E) or None without input_ids, exp(logit_scale)).

        For contrastive training (DDP calls ``forward``); a locked text tower's caption
        embeddings can be computed once and passed around instead of ``input_ids``.
        """
        text_emb = None if input_ids is None else self.embed_text(input_ids, attention_mask)
        return self.embed_latents(latents), text_emb, self.scale()

    # ---- rewards ------------------------------------------------------------------------
    def _text_inputs(self, prompts, input_ids, attention_mask):
        if (prompts is None) == (input_ids is None):
            raise ValueError("pass exactly one of `prompts` or `input_ids`.")
        if prompts is not None:
            tokens = self.tokenize(prompts)
            return tokens["input_ids"], tokens["attention_mask"]
        return input_ids, attention_mask

    def reward(
        self,
        latents: torch.Tensor,
        prompts: list[str] | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(N,) LRM reward R^L(z_i, c_i) = cosine of latent i and prompt i (eq. 12 divides by tau_L)."""
        input_ids, attention_mask = self._text_inputs(prompts, input_ids, attention_mask)
        if input_ids.shape[0] != latents.shape[0]:
            raise ValueError(
                f"{latents.shape[0]} latents but {input_ids.shape[0]} prompts; pass one per latent."
            )
        latent_emb = self.embed_latents(latents)
        text_emb = self.embed_text(input_ids, attention_mask)
        return (latent_emb * text_emb).sum(-1)

    def logits(self, latents: torch.Tensor, **text) -> torch.Tensor:
        """(N,) CLIP logit exp(logit_scale) * cos (diagnostics; not used by eq. 12)."""
        return self.scale() * self.reward(latents, **text)

    def detached_reward(self, latents: torch.Tensor, **text) -> torch.Tensor:
        """``reward`` with the LRM's parameters detached (Algorithm 4: "Detach sigma").

        Gradients reach `latents` (the student's ``pred``) but never the LRM, whatever the
        parameters' ``requires_grad`` flags are. No flag is flipped: ``functional_call`` swaps in
        detached views for the call and restores the parameters afterwards (not thread-safe:
        do not run it concurrently with an LRM optimizer step).
        """
        state = {f"lrm.{k}": v.detach() for k, v in self.named_parameters()}
        state.update({f"lrm.{k}": v for k, v in self.named_buffers()})
        return torch.func.functional_call(_RewardView(self), state, args=(latents,), kwargs=text)


class _RewardView(nn.Module):
    """Routes ``forward`` to ``reward`` so ``functional_call`` can swap the LRM's parameters."""

    def __init__(self, lrm: LatentRewardModel):
        super().__init__()
        self.lrm = lrm

    def forward(self, latents, **text):
        return self.lrm.reward(latents, **text)
