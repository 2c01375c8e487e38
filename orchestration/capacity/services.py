"""Reward-service replicas that share a train GPU: their weights and one batch's tensors.

An LRM recipe on exactly 8 GPUs gives each train worker a fraction of its GPU
(`scaling.gpus_per_worker`) and places the expert and the VAE replicas (`serve.*.num_gpus`)
in the rest, so one GPU holds a train worker and a replica. Each replica is measured like the
step (fake tensors): the expert scoring `max_batch_size` images at 224 px, the VAE decoding
`decode_chunk_size` latents at the recipe's resolution, both without gradient, float32.
"""

from __future__ import annotations

import json

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from orchestration.capacity.architectures import expert_config, teacher_archs
from orchestration.capacity.tracking import LiveBytes
from trainer.cluster.placement import reward_service_gpus, train_worker_gpus
from trainer.config import RGLCDConfig

SLACK = 1e-9


def shares_train_gpu(cfg: RGLCDConfig) -> bool:
    """Whether the reward-service replicas fit beside a train worker on its GPU."""
    per_worker, service = train_worker_gpus(cfg), reward_service_gpus(cfg)
    return bool(service) and 0 < per_worker < 1 and max(service) <= 1 - per_worker + SLACK


def _params_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _expert_bytes(kind: str, batch: int) -> int | None:
    config = expert_config(kind)
    if config is None:
        return None
    from transformers import CLIPConfig, CLIPModel

    model = CLIPModel(CLIPConfig.from_dict(config)).eval()
    tracker = LiveBytes()
    with torch.no_grad(), tracker:
        model.get_image_features(pixel_values=torch.randn(batch, 3, 224, 224))
        model.get_text_features(input_ids=torch.randint(0, 1000, (batch, 77)))
    return _params_bytes(model) + tracker.peak


def _vae_bytes(cfg: RGLCDConfig, chunk: int) -> int:
    from diffusers import AutoencoderKL

    _, folder = teacher_archs(cfg)
    path = folder / "vae" / "config.json"
    config = json.loads((path if path.exists() else folder / "vae.json").read_text())
    vae = AutoencoderKL.from_config(config).eval()
    side = cfg.model.resolution // 8
    tracker = LiveBytes()
    with torch.no_grad(), tracker:
        vae.decode(torch.randn(chunk, vae.config.latent_channels, side, side))
    return _params_bytes(vae) + tracker.peak


def colocated_replicas(cfg: RGLCDConfig) -> dict[str, int]:
    """{replica: bytes} of the largest replica a train GPU may hold beside its worker."""
    if not shares_train_gpu(cfg):
        return {}
    sizes = {}
    with FakeTensorMode():
        for scorer in cfg.serve.scorers:
            if scorer.num_gpus > 0:
                size = _expert_bytes(scorer.kind, scorer.max_batch_size or 1)
                if size is not None:
                    sizes[f"{scorer.name} replica"] = size
        for vae_name, vae in cfg.serve.vaes.items():
            if vae.num_gpus > 0:
                sizes[f"VAE {vae_name} replica"] = _vae_bytes(cfg, vae.decode_chunk_size)
    if not sizes:
        return {}
    largest = max(sizes, key=sizes.get)
    return {largest: sizes[largest]}

