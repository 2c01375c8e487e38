"""Benchmark: memory of the streaming stages does not grow with the data.

    python -m orchestration.bench.stream_memory lrm [--rows 3000] [--scale 10] [--ray]
    python -m orchestration.bench.stream_memory eval [--images 200] [--scale 10] [--in-process]

`lrm`: writes synthetic latent shards (SD-sized 4x64x64 float16 latents, as rglcd-data-job
does) of `--rows` and `--scale` x `--rows` rows, then pretrains a small LRM on each for one
full pass over the training rows (`rglcd-pretrain-lrm scaling.local=true`, or one Ray Train
worker with `--ray`), each in a fresh process, and prints the trainer's peak RSS beside the size of the
latents it read: flat RSS while the data grows tenfold is the claim.

`eval`: runs `rglcd-evaluate` on a tiny SD teacher that makes 128x128 images, at `--images`
and `--scale` x `--images` images per row (prompts x seeds), each in a fresh process (a
local Ray instance, or `--in-process`: the actors' work done in the driver), and prints the
driver's peak RSS beside the size of the images it generated.

Figures are peak resident set sizes (``getrusage``) of the named process, on this machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from rglcd.codecs import encode_latents
from rglcd.tiny_models import save_tiny_clip_model, tiny_sd_pipeline
from rglcd.toy.scenes import all_captions

LATENT_SHAPE = (4, 64, 64)  # SD 1.5 at 512 px
ROWS_PER_SHARD = 1000
BATCH = 64
IMAGE_SIZE = 128  # eval: generated images are IMAGE_SIZE x IMAGE_SIZE RGB


def write_latent_shards(folder: Path, rows: int, seed: int = 0) -> Path:
    """rglcd-data-job's layout: latent shards + manifest.json, the last shard held out."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    shards, written = [], 0
    total = rows + ROWS_PER_SHARD  # training rows, then one held-out shard
    while written < total:
        n = min(ROWS_PER_SHARD, total - written)
        latents = torch.randn(n, *LATENT_SHAPE, generator=generator).half()
        table = pa.table({
            "latent": [encode_latents(lat[None]) for lat in latents],
            "caption": [f"caption {(written + i) % 997}" for i in range(n)],
        })
        name = f"latents-{len(shards):05d}.parquet"
        pq.write_table(table, folder / name)
        shards.append({"file": name, "rows": n})
        written += n
    manifest = {"scaling_factor": 0.18215, "latent_shape": list(LATENT_SHAPE), "shards": shards}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def _lrm_run(latents: Path, rows: int, work: Path, use_ray: bool) -> dict:
    clip = work / "clip"
    if not clip.exists():
        save_tiny_clip_model(clip)
    steps = rows // BATCH  # one pass over the training rows
    argv = [
        f"data.latents={latents}", f"data.clip_dir={clip}", f"optim.steps={steps}",
        f"optim.eval_every={steps}", f"optim.batch_size={BATCH}", "tower.width=32",
        "tower.depth=1", "tower.heads=2", "tower.patch_size=4", "optim.warmup_steps=1",
        f"output.dir={work / f'lrm-{rows}'}",
    ]
    argv += [f"output.storage_path={work / 'ray'}"] if use_ray else ["scaling.local=true"]
    code = ("import json, resource, sys; from orchestration.commands.pretrain_lrm import pretrain; "
            "r = pretrain(sys.argv[1:])['loss_history'][-1]; "
            "r['process_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
            "print('RESULT', json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def bench_lrm(args: argparse.Namespace) -> list[dict]:
    bytes_per_row = 2 * LATENT_SHAPE[0] * LATENT_SHAPE[1] * LATENT_SHAPE[2]
    results = []
    with tempfile.TemporaryDirectory(prefix="stream-memory-lrm-") as tmp:
        work = Path(tmp)
        for rows in (args.rows, args.scale * args.rows):
            latents = write_latent_shards(work / f"latents-{rows}", rows)
            last = _lrm_run(latents, rows, work, args.ray)
            trainer_rss = last.get("peak_rss_mb", last["process_rss_mb"])  # Ray: the worker's
            results.append({"rows": rows, "latent_mib": round(rows * bytes_per_row / 2**20),
                            "steps": last["step"], "trainer_peak_rss_mib": round(trainer_rss),
                            "command_peak_rss_mib": round(last["process_rss_mb"])})
            print(json.dumps(results[-1]), flush=True)
    return results


def _eval_setup(work: Path, images: int) -> Path:
    """A 128 px tiny SD teacher, prompts, and an eval config of `images` images per row."""
    teacher = work / "teacher"
    if not teacher.exists():
        pipe = tiny_sd_pipeline()
        pipe.unet.register_to_config(sample_size=IMAGE_SIZE // 2)  # the tiny VAE upsamples 2x
        pipe.save_pretrained(teacher)

    captions = all_captions()
    prompts = work / f"prompts-{images}.txt"
    prompts.write_text("\n".join(captions[i % len(captions)] for i in range(images)) + "\n")
    config = {
        "models": [{"name": "teacher", "kind": "teacher", "path": str(teacher), "steps": [1]}],
        "prompts": str(prompts), "max_prompts": None, "seeds": [0],
        "generation": {"batch_size": 16, "num_cpus_per_task": 1},
        "scoring": {"mode": "in-process",
                    "scorers": [{"name": "toy-judge", "kind": "toy-judge"}]},
        "reference": {"source": "toy:validation", "num_images": 16},
        "output": {"dir": str(work / f"eval-{images}")},
    }
    path = work / f"eval-{images}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# The driver loop with the generation actor's work done in this process (no Ray): the
# driver then also holds the pipeline, but what grows with the images would show the same.
IN_PROCESS = """
import resource, sys
from orchestration.commands.evaluate import run_evaluation
from orchestration.evaluation import ray_tasks
from orchestration.evaluation.config import EvalConfig
from orchestration.evaluation.worker import EvalWorker
from rglcd.configuration import load_config

def chunks(cfg, jobs, size):
    worker = EvalWorker(cfg.model_dump(mode="json"), size, "cpu", 1)
    for job in jobs:
        yield getattr(worker, job[0])(*job[1:])

ray_tasks.stream_chunks = chunks
run_evaluation(load_config(EvalConfig, sys.argv[1], []))
print("RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def bench_eval(args: argparse.Namespace) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="stream-memory-eval-") as tmp:
        work = Path(tmp)
        for images in (args.images, args.scale * args.images):
            config = _eval_setup(work, images)
            code = IN_PROCESS if args.in_process else (
                "import resource, sys; from orchestration.commands.evaluate import main; "
                "main(['--config', sys.argv[1]]); "
                "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
            out = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True,
                                 text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-3000:])
            rss = float(next(x for x in out.stdout.splitlines() if x.startswith("RSS ")).split()[1])
            results.append({"images": images, "image_mib": round(images * IMAGE_SIZE**2 * 3 / 2**20, 1),
                            "driver_peak_rss_mib": round(rss, 1)})
            print(json.dumps(results[-1]), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("lrm", "eval"))
    parser.add_argument("--rows", type=int, default=3000, help="lrm: training rows at 1x")
    parser.add_argument("--images", type=int, default=200, help="eval: images per row at 1x")
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--ray", action="store_true", help="lrm: one Ray Train worker")
    parser.add_argument("--in-process", action="store_true",
                        help="eval: the actors' work in the driver process (no Ray)")
    args = parser.parse_args(argv)
    (bench_lrm if args.which == "lrm" else bench_eval)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
