"""Device check: bf16 training steps of tiny SD / SDXL-LoRA students and one reward-scorer batch.

Runs the trainer's own code (``trainer.loop.Trainer``: teacher loading, the distillation task,
autocast, backward, clipping, AdamW, EMA) on three tiny models built in code, nothing downloaded:

  sd-v-lcd        tiny SD2.1-768-like teacher (v-prediction), full-UNet LCD + EMA target
  sdxl-lcd-lora   tiny SDXL-like teacher, LCM-LoRA (adapters, no EMA target)
  scorer          a batch of the clipscore scorer (reward_service) on a tiny CLIP, forward
                  and backward w.r.t. the images, as the direct reward uses it (run twice:
                  the first call includes warm-up)

and prints, per part, the first step's time (includes CUDA warm-up), the mean of the other
steps, and ``torch.cuda.max_memory_allocated``::

    rglcd-gpu-check                         # needs CUDA (exits 2 without)
    rglcd-gpu-check --steps 20 --batch 16 --json outputs/gpu_check.json
    rglcd-gpu-check --device cpu --steps 2 --batch 2   # same code on CPU

(`rglcd-gpu-check` is `python -m orchestration.commands.gpu_check`.)

It checks that the code paths run on the device under bf16 autocast; the models are tiny, so
the timings say nothing about real-scale throughput.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from reward_service.config import ScorerConfig
from reward_service.scorers.registry import build_scorer
from trainer.config import RGLCDConfig
from trainer.data import LocalBatch
from trainer.loop import Trainer
from trainer.run_outputs.checkpointing import DataPosition

PROMPTS = ["a red circle on a blue background", "a small yellow square", "a green triangle"]
NO_CUDA = (
    "CUDA is not available on this machine (torch.cuda.is_available() is False); run this on a "
    "GPU host, or pass --device cpu to run the same check on the CPU."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu.")
    parser.add_argument("--steps", type=int, default=5, help="Training steps per model (>= 1).")
    parser.add_argument("--batch", type=int, default=8, help="Latents per training step.")
    parser.add_argument("--scorer-batch", type=int, default=8, help="Images in the scorer batch.")
    parser.add_argument("--json", default=None, help="Also write the results to this file.")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.scorer_batch < 1:
        parser.error("--steps, --batch and --scorer-batch must be >= 1")
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    """Free the previous part's tensors so each part's peak is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _timed(fn: Callable[[int], dict], count: int, device: torch.device) -> list[float]:
    seconds = []
    for i in range(count):
        _sync(device)
        start = time.perf_counter()
        fn(i)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _summary(name: str, seconds: list[float], device: torch.device, **extra) -> dict:
    rest = seconds[1:]
    return {
        "part": name,
        "first_step_s": round(seconds[0], 4),
        "mean_step_s": round(sum(rest) / len(rest), 4) if rest else None,
        "steps": len(seconds),
        "max_memory_allocated_mib": _peak_mib(device),
        **extra,
    }


def _trainer_config(teacher: Path, run_dir: Path, model: dict):
    """A trainer config for a tiny teacher folder: bf16 autocast, 16 px images."""
    return RGLCDConfig.model_validate(
        {
            "model": {
                "teacher": str(teacher), "mixed_precision": "bf16", "resolution": 16, **model
            },
            "lcd": {"learning_rate": 1e-4},
            "output": {"dir": str(run_dir)},
        }
    )


def _batch(batch_size: int, step: int):
    from rglcd.tiny_models import (  # deferred: loads diffusers, transformers
        LATENT_CHANNELS,
        LATENT_SIZE,
    )

    generator = torch.Generator().manual_seed(step)
    shape = (batch_size, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
    return LocalBatch(
        latents=torch.randn(shape, generator=generator),
        captions=[PROMPTS[i % len(PROMPTS)] for i in range(batch_size)],
        sample_keys=torch.arange(batch_size, dtype=torch.int64) + 1000 * step,
        position=DataPosition(0, step + 1),
    )


def check_training(name: str, cfg, device: torch.device, steps: int, batch: int) -> dict:
    """`steps` optimizer steps of the trainer on one device; loss must stay finite."""
    _reset_memory(device)
    trainer = Trainer(cfg, rank=0, world_size=1, device=device)
    losses: list[float] = []

    def one_step(step: int) -> None:
        losses.append(trainer.train_step(_batch(batch, step), step)["loss"])

    seconds = _timed(one_step, steps, device)
    if not all(map(torch.isfinite, torch.tensor(losses))):
        raise RuntimeError(f"{name}: non-finite loss {losses}")
    trainable = sum(p.numel() for p in trainer.task.trainable_parameters())
    return _summary(name, seconds, device, losses=[round(x, 5) for x in losses],
                    trainable_params=trainable)


def check_scorer(clip_dir: Path, device: torch.device, batch: int) -> dict:
    """One clipscore batch under bf16 autocast, forward + backward w.r.t. the images."""
    _reset_memory(device)
    spec = ScorerConfig(name="clipscore", kind="clipscore", checkpoint=str(clip_dir),
                        device=str(device))
    scorer = build_scorer(spec)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    scores: list[torch.Tensor] = []

    def one_batch(step: int) -> None:
        generator = torch.Generator().manual_seed(step)
        images = torch.rand(batch, 3, 64, 64, generator=generator).to(device).requires_grad_()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            result = scorer(images, prompts).float()
        result.mean().backward()
        scores.append(result.detach().cpu())

    seconds = _timed(one_batch, 2, device)  # the first call includes warm-up
    if not torch.isfinite(torch.cat(scores)).all():
        raise RuntimeError(f"clipscore: non-finite scores {scores}")
    return _summary("scorer-clipscore", seconds, device, batch=batch)


def run_checks(device: torch.device, steps: int, batch: int, scorer_batch: int) -> list[dict]:
    from rglcd.tiny_models import (
        save_tiny_clip_model,
        save_tiny_sd_pipeline,
        save_tiny_sdxl_pipeline,
    )  # deferred: loads diffusers, transformers

    results = []
    with tempfile.TemporaryDirectory(prefix="rglcd-gpu-check-") as scratch:
        root = Path(scratch)
        sd = save_tiny_sd_pipeline(root / "sd-v", prediction_type="v_prediction")
        cfg = _trainer_config(sd, root / "run-sd", {})
        results.append(check_training("sd-v-lcd", cfg, device, steps, batch))
        sdxl = save_tiny_sdxl_pipeline(root / "sdxl")
        lora = {"family": "sdxl", "lora": {"rank": 4, "alpha": 4}}
        cfg = _trainer_config(sdxl, root / "run-sdxl", lora)
        results.append(check_training("sdxl-lcd-lora", cfg, device, steps, batch))
        clip = save_tiny_clip_model(root / "clip")
        results.append(check_scorer(clip, device, scorer_batch))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: {NO_CUDA}", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {device} ({name}), torch {torch.__version__}, bf16 autocast")
    results = run_checks(device, args.steps, args.batch, args.scorer_batch)
    for row in results:
        memory = row["max_memory_allocated_mib"]
        mean = row["mean_step_s"]
        print(
            f"{row['part']:>16}: first step {row['first_step_s']:.3f} s, mean of the rest "
            f"{'-' if mean is None else f'{mean:.3f} s'}, max_memory_allocated "
            f"{'n/a (cpu)' if memory is None else f'{memory} MiB'}"
        )
    payload = {"device": str(device), "device_name": name, "results": results}
    print("RESULT " + json.dumps(payload))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
