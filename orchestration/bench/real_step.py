"""One real SD 1.5-size training step of the LRM recipe on this CPU, beside the plan's figures.

    python -m orchestration.bench.real_step --plan-only   # the plans: no memory, no lock
    flock /tmp/rglcd-mem.lock flock /tmp/rglcd-ray.lock \
        python -m orchestration.bench.real_step [--resolution 256] [--student-dtype bf16]

`--plan-only` writes the plan of each resolution to `--plans` (a JSON file in the temporary
folder), which the measured run reads, so the machine's shared memory is held only while the
real step runs.

Builds `configs/sd15-rglcd-lrm-hpsv2.1.yaml`'s models at their real size with random weights
(SD 1.5 UNet, VAE and CLIP ViT-L/14 text encoder from rglcd/arch_configs, the SD-sized LRM;
the toy world's tokenizers, whose ids are valid CLIP ids) and runs one step of the trainer's
own `DistillationTask` as `trainer.loop.Trainer.train_step` does: bf16 autocast, backward,
gradient clipping, AdamW, the EMA update and one LRM update on an expert answer made up on
the spot (the reward service is not started). Batch 1, one worker (no DDP).

Memory: resident set size sampled every 5 ms; the optimizer states exist before the measured
step (a zero-gradient AdamW step makes them, as every step after the first finds them).
The plan (`orchestration/capacity`) predicts the same configuration: same resolution and
weight dtypes, CPU (no foreach AdamW temporary).

This 24 GiB machine cannot hold the trainer's float32 everything at SD 1.5 size (student,
gradients, two AdamW moments, EMA target and teacher: about 20 GiB before activations), so the
frozen parts (teacher, EMA target, text encoder, VAE) are bf16 by default, and the run takes
the most faithful configuration the plan says fits the memory available now: the trainer's
float32 student (with float32 gradients and AdamW moments) before a bf16 one, then the
largest of 512, 384 and 256 px.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import torch

from orchestration.capacity.architectures import build_parts, recipe_archs
from orchestration.capacity.plan import GIB, CapacityPlan, Precision, plan_recipe
from orchestration.capacity.step import StepMeasurement
from orchestration.paths import REPO_ROOT
from rglcd.toy.paths import TOY_LRM_DIR, TOY_PIPELINE_DIR
from trainer.config import RGLCDConfig, load_trainer_config
from trainer.data import DataPosition, LocalBatch
from trainer.loop import autocast_context
from trainer.models import TeacherParts
from trainer.reward.expert_queue import ExpertAnswer
from trainer.reward.lrm_hook import LatentProxyReward
from trainer.task import DistillationTask

RECIPE = "configs/sd15-rglcd-lrm-hpsv2.1.yaml"
RESOLUTIONS = (512, 384, 256)
PLANS = Path(tempfile.gettempdir()) / "rglcd-real-step-plans.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CAPTION = "a photo of an astronaut riding a horse on the moon"


class RSSPeak:
    """Peak resident set size of this process while the `with` block runs."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s, self.peak, self._stop = interval_s, 0, threading.Event()
        self._process = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> RSSPeak:
        self.peak = psutil.Process().memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def rss() -> int:
    return psutil.Process().memory_info().rss


def recipe_config(resolution: int) -> RGLCDConfig:
    overrides = [
        f"model.resolution={resolution}", "lcd.global_batch_size=1", "lrm.batch_size=1",
        "scaling.num_workers=1", "scaling.use_gpu=false", "scaling.gpus_per_worker=null",
    ]
    return load_trainer_config(REPO_ROOT / RECIPE, overrides, check_paths=False)


def plans(precision: Precision, path: Path, compute: bool) -> dict[int, CapacityPlan]:
    """The plan of each resolution in this configuration: from `path` when it holds them,
    else computed (and added there)."""
    key = f"{precision.student}/{precision.frozen}"
    saved = json.loads(path.read_text()) if path.exists() else {}
    if key in saved and not compute:
        return {int(r): _plan_from(d) for r, d in saved[key].items()}
    computed = {r: plan_recipe(recipe_config(r), RECIPE, 1, "cpu", precision) for r in RESOLUTIONS}
    saved[key] = {r: asdict(p) for r, p in computed.items()}
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(saved))
    partial.replace(path)  # whole or absent for a run that reads it meanwhile
    return computed


def _plan_from(data: dict) -> CapacityPlan:
    return CapacityPlan(**{**data, "step": StepMeasurement(**data["step"])})


def pick(args, available: int) -> tuple[Precision, int, CapacityPlan]:
    """The most faithful configuration whose plan leaves 2 GiB of the available memory: the
    trainer's float32 student before a bf16 one, the largest resolution first."""
    students = [args.student_dtype] if args.student_dtype else ["fp32", "bf16"]
    resolutions = [args.resolution] if args.resolution else list(RESOLUTIONS)
    options = []
    for student in students:
        precision = Precision(DTYPES[student], DTYPES[args.frozen_dtype])
        planned = plans(precision, args.plans, compute=False)
        options += [(precision, r, planned[r]) for r in resolutions]
    for precision, resolution, plan in options:
        if plan.total_bytes + 2 * GIB <= available:
            return precision, resolution, plan
    return min(options, key=lambda option: option[2].total_bytes)


@dataclass
class Built:
    task: object
    optimizer: torch.optim.Optimizer
    hook: object


def build_real(cfg: RGLCDConfig, precision: Precision) -> Built:
    """The real task of the recipe at full size, random weights (module docstring)."""
    from diffusers import DDPMScheduler
    from transformers import AutoTokenizer

    parts = build_parts(recipe_archs(cfg), precision.frozen)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    teacher = TeacherParts(
        unet=parts.unet, vae=parts.vae, text_encoder=parts.text_encoders[0],
        tokenizer=AutoTokenizer.from_pretrained(TOY_PIPELINE_DIR / "tokenizer"),
        alphas_cumprod=scheduler.alphas_cumprod.float(), prediction_type="epsilon",
        scheduler=scheduler,
    )
    parts.lrm.tokenizer = AutoTokenizer.from_pretrained(TOY_LRM_DIR / "tokenizer")
    hook = LatentProxyReward(parts.lrm, MadeUpExpert(), cfg.lrm, beta=cfg.reward.beta,
                             final_step=None, drain_timeout_s=0.0)
    task = DistillationTask(teacher, cfg.lcd, cfg.model, seed=cfg.seed, reward=hook)
    task.student.to(precision.student)
    task.target.to(precision.frozen)
    optimizer = torch.optim.AdamW(task.trainable_parameters(), lr=cfg.lcd.learning_rate)
    return Built(task, optimizer, hook)


class MadeUpExpert:
    """Stands in for the expert queue: answers each request at once with random scores."""

    pending: list = []
    window = 1

    def submit(self, step, triplets, captions) -> None:
        self._request = (step, triplets, captions)

    def collect(self, step):
        at, triplets, captions = self._request
        n = len(captions)
        return [ExpertAnswer(at, triplets, captions, torch.randn(n, 3),
                             torch.ones(n, 3, dtype=torch.bool), None, 0.0)]

    def drain(self, timeout_s):
        return []


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """A zero-gradient AdamW step: creates the moments and leaves the weights unchanged."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_step(built: Built, cfg: RGLCDConfig, latent_side: int) -> dict[str, float]:
    """trainer.loop.Trainer.train_step on one CPU worker (no DDP, no grad scaler for bf16)."""

    task = built.task
    batch = LocalBatch(
        latents=torch.randn(1, 4, latent_side, latent_side), captions=[CAPTION],
        sample_keys=torch.tensor([0]), position=DataPosition(),
    )
    with autocast_context(cfg, torch.device("cpu")):
        loss, metrics = task.step(batch, 0)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(task.trainable_parameters(), cfg.lcd.max_grad_norm)
    built.optimizer.step()
    built.optimizer.zero_grad(set_to_none=True)
    metrics |= task.after_optimizer_step()
    return metrics


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values() for t in state.values()
        if isinstance(t, torch.Tensor) and t.ndim > 0
    )


def module_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def compare(plan: CapacityPlan, built: Built, measured: dict[str, int]) -> list[tuple[str, int, int]]:
    """(line, plan bytes, measured bytes) rows."""
    task, hook = built.task, built.hook
    exact = {
        "student weights": module_bytes(task.student),
        "EMA target": module_bytes(task.target),
        "teacher UNet (frozen)": module_bytes(task.teacher.unet),
        "text encoder(s) (frozen)": module_bytes(task.teacher.text_encoder),
        "VAE (frozen)": module_bytes(task.teacher.vae),
        "optimizer state": state_bytes(built.optimizer),
        "LRM weights": module_bytes(hook.lrm),
        "LRM optimizer state": state_bytes(hook.optimizer),
    }
    rows = [(name, plan.lines.get(name, 0), exact[name]) for name in exact]
    rows.append(("weights + optimizer state (RSS rise while building)", plan.static_bytes,
                 measured["static"]))
    rows.append(("one step's tensors (RSS peak in the step - before it)", plan.step_bytes,
                 measured["step"]))
    rows.append(("total (RSS peak - RSS with the libraries loaded)", plan.total_bytes,
                 measured["total"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, choices=(256, 384, 512), default=None,
                        help="Default: the largest the plan fits in the memory available now.")
    parser.add_argument("--student-dtype", choices=sorted(DTYPES), default=None,
                        help="Default: fp32 (the trainer's) when it fits, else bf16.")
    parser.add_argument("--frozen-dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--plans", type=Path, default=PLANS)
    parser.add_argument("--plan-only", action="store_true",
                        help="Compute the plans, write them to --plans and stop.")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.plan_only:
        for student in [args.student_dtype] if args.student_dtype else ["fp32", "bf16"]:
            precision = Precision(DTYPES[student], DTYPES[args.frozen_dtype])
            for r, p in plans(precision, args.plans, compute=True).items():
                print(f"student {student}, {r} px: plan total {p.total_bytes / GIB:.2f} GiB")
        return
    available = psutil.virtual_memory().available
    precision, resolution, plan = pick(args, available)
    cfg = recipe_config(resolution)
    print(f"{RECIPE} at {resolution} px, batch 1, student {precision.student}, frozen parts "
          f"{args.frozen_dtype}; {available / GIB:.1f} GiB available; plan total "
          f"{plan.total_bytes / GIB:.2f} GiB", flush=True)
    baseline = rss()
    start = time.perf_counter()
    with RSSPeak() as building:
        built = build_real(cfg, precision)
        init_optimizer_state(built.optimizer)
        init_optimizer_state(built.hook.optimizer)
    built_at, build_s = rss(), time.perf_counter() - start
    start = time.perf_counter()
    with RSSPeak() as stepping:
        metrics = train_step(built, cfg, resolution // 8)
    step_s = time.perf_counter() - start
    measured = {"static": built_at - baseline, "step": stepping.peak - built_at,
                "total": stepping.peak - baseline}
    print(f"build {build_s:.0f} s (RSS peak while building {building.peak / GIB:.2f} GiB); step "
          f"{step_s:.0f} s, lcd_loss {metrics['lcd_loss']:.4f}, lrm_updates "
          f"{metrics.get('lrm_updates', 0):.0f}; libraries {baseline / GIB:.2f} GiB; process "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    print(f"FLOPs per step (plan): {plan.step.flops / 1e12:.2f} TFLOP -> "
          f"{plan.step.flops / step_s / 1e9:.0f} GFLOP/s on this CPU\n")
    print("| memory | plan (GiB) | measured (GiB) |\n| --- | --- | --- |")
    for name, planned, got in compare(plan, built, measured):
        print(f"| {name} | {planned / GIB:.2f} | {got / GIB:.2f} |")


if __name__ == "__main__":
    main()
