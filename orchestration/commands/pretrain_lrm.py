"""Pretrain the latent proxy reward model (LRM) with a CLIP loss, as a Ray Train job.

    rglcd-pretrain-lrm                   # toy world -> rglcd/toy/artifacts/lrm
    rglcd-pretrain-lrm --steps 50 --output outputs/lrm-smoke
    rglcd-pretrain-lrm --num-workers 2 --text-blocks 1
    rglcd-pretrain-lrm --local --device cuda --steps 20000   # one GPU, no Ray
    rglcd-pretrain-lrm --evaluate rglcd/toy/artifacts/lrm   # metrics only

(`rglcd-pretrain-lrm` is `python -m orchestration.commands.pretrain_lrm`.) On real data, the
latent shards of `rglcd-data-job` (no VAE needed: they hold the latents) and a CLIP model
folder for the text tower; the last shard is held out:

    rglcd-pretrain-lrm --latents /data/cc12m-latents-sd15-512 \
        --clip-dir /models/clip-vit-large-patch14 --output /models/lrm-sd15-512 \
        --num-workers 8 --use-gpu --steps 20000 --batch-size 256

Each worker encodes its shard of the training images with the teacher's VAE
(``latent_dist.sample() * scaling_factor``, the z0 of RG-LCD), builds the LRM from the
pretrained CLIP's text tower and trains it contrastively on (latent, caption) pairs
(``trainer/lrm/pretrain.py``). Rank 0 reports zero-shot caption-ranking accuracy (top-1/top-5
over each split's distinct captions) on the "validation" split (seen caption combinations,
new images) and the "heldout" split (compositions never seen in training; also ranked
against all 448 captions of the toy grammar as "heldout_all", with each attribute's accuracy
among captions that differ in it only: "heldout_all_shape_accuracy" etc.), and saves the LRM
(fp16 safetensors + config + tokenizer + ``pretrain_metrics.json``) as the checkpoint, which
is copied to ``--output`` at the end.

With ``--latents`` each worker reads its share of the training shards, the latent tower is
sized for SD latents by default (patch 4, width 512, 12 blocks, 8 heads: the reference code's
ViT) and rank 0 reports retrieval on the held-out shard ("heldout_*" metrics); the output
folder is what the SD recipes' ``lrm.checkpoint`` loads.

Departures from the paper (appendix B): retrieval over captions instead of ImageNet zero-shot
classification (and toy data unless ``--latents``); the text tower stays locked by default (the
paper "retains the original pretrained text encoder"; ``--text-blocks N`` tunes its last N
blocks lightly), so the latent tower learns into the pretrained CLIP's text space.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from orchestration.paths import REPO_ROOT
from rglcd import storage
from rglcd.toy.paths import (
    TOY_DATA_DIR,
    TOY_LRM_DIR,
    TOY_MINICLIP_DIR,
    TOY_PIPELINE_DIR,
)
from trainer.lrm.latent_shards import read_manifest, split_shards

EVAL_SPLITS = ("validation", "heldout")
TOY_TOWER = {"patch_size": 2, "width": 96, "depth": 4, "heads": 4}
LATENT_TOWER = {"patch_size": 4, "width": 512, "depth": 12, "heads": 8}  # SD's 4x64x64 latents
METRICS_FILE = "pretrain_metrics.json"


def _location(value: str) -> str:
    """A path or URI given on the command line: a local path is made absolute here, where it
    was typed; a URI (s3://, gs://) stays as it is (rglcd/storage.py)."""
    return storage.local_path(value) if storage.is_local(value) else value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=128, help="per worker")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--text-blocks", type=int, default=0, help="last text blocks to tune")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--max-minutes", type=float, default=None, help="stop early (recorded)")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latents", type=_location, default=None,
                   help="rglcd-data-job output folder: train on its latent shards, not the toy "
                   "world")
    p.add_argument("--heldout-shards", type=int, default=1, help="with --latents: last N shards")
    p.add_argument("--max-rows", type=int, default=None, help="with --latents: training rows read (all workers)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per Ray Train worker")
    for name in ("patch-size", "width", "depth", "heads"):  # default: toy or SD-sized tower
        p.add_argument(f"--{name}", type=int, default=None)
    p.add_argument("--clip-dir", type=Path, default=TOY_MINICLIP_DIR)
    p.add_argument("--pipeline-dir", type=Path, default=TOY_PIPELINE_DIR, help="teacher (VAE)")
    p.add_argument("--vae-dir", type=Path, default=None,
                   help="AutoencoderKL folder (default: <pipeline-dir>/vae)")
    p.add_argument("--data-dir", type=Path, default=TOY_DATA_DIR)
    p.add_argument("--n-train", type=int, default=40_000, help="toy shards (as built)")
    p.add_argument("--n-eval", type=int, default=2_000, help="toy validation/heldout size")
    p.add_argument("--output", type=_location, default=str(TOY_LRM_DIR))
    p.add_argument("--storage-path", type=_location,
                   default=str(REPO_ROOT / "outputs" / "ray_results"))
    p.add_argument("--name", default=None, help="Ray Train run name (default: timestamped)")
    p.add_argument("--local", action="store_true",
                   help="train in this process on --device, without Ray (e.g. on one GPU)")
    p.add_argument("--device", default="cpu", help="with --local: torch device, e.g. cuda")
    p.add_argument("--evaluate", type=Path, default=None, metavar="LRM_DIR",
                   help="only evaluate the LRM saved in LRM_DIR (no training, no Ray)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 2 or args.num_workers < 1:
        p.error("--steps >= 1, --batch-size >= 2 and --num-workers >= 1 are required")
    if args.device != "cpu" and not args.local:
        p.error(f"--device {args.device} needs --local; Ray Train workers use --use-gpu")
    if args.local and (args.num_workers != 1 or args.use_gpu):
        p.error("--local trains in this one process (--device picks it); drop --num-workers, "
                "--use-gpu or --local")
    sizes = LATENT_TOWER if args.latents else TOY_TOWER
    for name, default in sizes.items():
        setattr(args, name, getattr(args, name) or default)
    required = [("--clip-dir", args.clip_dir / "config.json")]
    if args.latents is not None:
        try:
            split_shards(args.latents, args.heldout_shards)
        except ValueError as err:
            p.error(f"--latents: {err}")
    elif args.vae_dir is None:
        required.append(("--pipeline-dir", args.pipeline_dir / "vae" / "config.json"))
    else:
        required.append(("--vae-dir", args.vae_dir / "config.json"))
    for flag, path in required:
        if not path.exists():
            p.error(f"{flag}: {path} is missing; build it with rglcd-build-toy-world")
    return args


def _load_split(config: dict, split: str, vae, tokenizer, rank=0, world=1, caption_bank=None):
    from rglcd.toy.data import read_toy_images
    from trainer.lrm.pretrain import prepare_split

    images, captions = read_toy_images(config["data_dir"], split)
    images, captions = images[rank::world], captions[rank::world]
    return prepare_split(vae, tokenizer, images, captions, seed=config["seed"] + rank,
                         caption_bank=caption_bank)


def _load_eval_splits(config: dict, vae, tokenizer) -> dict:
    """validation / heldout ranked against their own distinct captions, and heldout against
    every caption of the toy grammar (448, as the mini CLIP's build report does)."""
    from rglcd.toy.scenes import all_captions

    splits = {s: _load_split(config, s, vae, tokenizer) for s in EVAL_SPLITS}
    splits["heldout_all"] = _load_split(config, "heldout", vae, tokenizer,
                                        caption_bank=all_captions())
    return splits


def _build_model(config: dict, latent_channels: int, scaling_factor: float):
    from trainer.lrm import LatentRewardModel, LatentTowerConfig, pretrain_groups, set_trainable

    torch.manual_seed(config["seed"])  # identical initial weights on every rank
    latent = LatentTowerConfig(
        latent_channels=latent_channels, patch_size=config["patch_size"],
        width=config["width"], depth=config["depth"], heads=config["heads"],
    )
    model = LatentRewardModel.from_clip_dir(
        config["clip_dir"], latent=latent, latent_scaling_factor=scaling_factor
    )
    set_trainable(model, pretrain_groups(model, text_blocks=config["text_blocks"]))
    return model


def _evaluate(model, eval_data: dict) -> dict:
    from rglcd.toy.scenes import parse_caption
    from trainer.lrm.pretrain import evaluate_retrieval

    metrics = {}
    for split, data in eval_data.items():
        # Which attributes the latent tower sees (shape is the hard one at 8x8 latents).
        attributes = parse_caption if split == "heldout_all" else None
        result = evaluate_retrieval(model, data, attributes=attributes)
        metrics.update({f"{split}_{k}": v for k, v in result.items()})
    return metrics


def evaluate_saved(args: argparse.Namespace) -> dict:
    """Metrics of the LRM saved in ``args.evaluate`` on the toy eval splits (no Ray)."""
    from trainer.lrm import LatentRewardModel

    config = _config(args)
    model = LatentRewardModel.from_pretrained(args.evaluate).float().eval()
    if args.latents is not None:
        return _evaluate(model, _heldout_latents(config, model.tokenizer))
    _ensure_data(args, EVAL_SPLITS)
    vae = _load_vae(config)
    return _evaluate(model, _load_eval_splits(config, vae, model.tokenizer))


def _heldout_latents(config: dict, tokenizer) -> dict:
    from trainer.lrm.latent_shards import latent_split

    _, heldout = split_shards(config["latents"], config["heldout_shards"])
    return {"heldout": latent_split(heldout, tokenizer)}


def _toy_data(config: dict, rank: int, world: int, device: torch.device, stream=None):
    """(model, this rank's batches, rank 0's eval splits): toy images VAE-encoded here.

    The toy split is small: it is held, and each step draws a random batch of it.
    """
    from trainer.lrm.pretrain import cache_caption_embeddings

    vae = _load_vae(config).to(device)
    model = _build_model(config, vae.config.latent_channels, vae.config.scaling_factor)
    model = model.to(device)
    train = _load_split(config, "train", vae, model.tokenizer, rank, world)
    eval_data = _load_eval_splits(config, vae, model.tokenizer) if rank == 0 else {}
    if config["text_blocks"] == 0:
        cache_caption_embeddings(model, train)  # locked text tower: embed captions once
    generator = torch.Generator().manual_seed(config["seed"] + 1000 * rank)

    def batches():
        while True:
            yield train, torch.randint(len(train), (config["batch_size"],), generator=generator)

    return model, batches(), eval_data


def _latent_data(config: dict, rank: int, world: int, device: torch.device, stream=None):
    """(model, this rank's streamed batches, rank 0's held-out split) from data_job's shards.

    `stream` yields (latents, captions) batches (Ray Train: this worker's share of the Ray
    Dataset); None reads the training shards here (a local run).
    """
    from trainer.lrm.latent_shards import batch_split, local_batches
    from trainer.lrm.pretrain import cache_caption_embeddings

    manifest = read_manifest(config["latents"])
    train_files, _ = split_shards(config["latents"], config["heldout_shards"])
    channels, scaling = manifest["latent_shape"][0], manifest["scaling_factor"]
    model = _build_model(config, channels, scaling).to(device)
    eval_data = _heldout_latents(config, model.tokenizer) if rank == 0 else {}
    if stream is None:
        stream = local_batches(train_files, config["batch_size"], config["seed"] + rank,
                               config["max_rows"])

    def batches():
        for latents, captions in stream:
            data = batch_split(latents, captions, model.tokenizer)
            if config["text_blocks"] == 0:
                cache_caption_embeddings(model, data)  # locked text tower: no gradient there
            yield data, torch.arange(len(data))

    return model, batches(), eval_data


def _load_vae(config: dict):
    from diffusers import AutoencoderKL

    vae_source = {"pretrained_model_name_or_path": config["vae_dir"]} if config["vae_dir"] else \
        {"pretrained_model_name_or_path": config["pipeline_dir"], "subfolder": "vae"}
    return AutoencoderKL.from_pretrained(**vae_source, torch_dtype=torch.float32).eval()


def _report(model, eval_data: dict | None, history: list, config: dict, start: float,
            publish) -> None:
    """Every rank reports; rank 0 (the one with `eval_data`) evaluates and saves the LRM.

    ``publish(metrics, folder_or_None)``: ``ray.train.report`` in a Ray Train worker, a copy to
    ``--output`` in a local run.
    """
    metrics = {**history[-1], "steps_planned": config["steps"],
               "seconds": round(time.monotonic() - start, 1)}
    if eval_data is None:
        publish(metrics, None)
        return
    metrics |= _evaluate(model, eval_data)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, dtype=torch.float16)
        saved = {**metrics, "loss_history": history, "config": _portable(config)}
        (Path(tmp) / METRICS_FILE).write_text(json.dumps(saved, indent=2), encoding="utf-8")
        publish(metrics, tmp)


def _portable(config: dict) -> dict:
    """Paths inside the repository are saved relative to it, so the artifact is machine-neutral."""
    root = REPO_ROOT
    out = {}
    for key, value in config.items():
        if isinstance(value, str) and value.startswith(str(root) + "/"):
            value = str(Path(value).relative_to(root))
        out[key] = value
    return out


def _out_of_time(deadline: float | None, world: int) -> bool:
    """Rank 0's clock decides for everyone, so DDP ranks stop at the same step."""
    flag = torch.tensor([deadline is not None and time.monotonic() > deadline])
    if world > 1:
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: `train_lrm` on this rank's shard, results through ray.train.report."""
    import ray.train
    import ray.train.torch

    from trainer.lrm.latent_shards import ray_batches

    def publish(metrics: dict, folder: str | None) -> None:
        checkpoint = None if folder is None else ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)

    ctx = ray.train.get_context()
    if config["use_gpu"]:
        config = {**config, "device": str(ray.train.torch.get_device())}
    stream = None
    if config["latents"]:  # this worker's share of the streamed training shards
        stream = ray_batches(ray.train.get_dataset_shard("train"), config["batch_size"],
                             config["seed"] + ctx.get_world_rank())
    train_lrm(config, ctx.get_world_rank(), ctx.get_world_size(),
              ray.train.torch.prepare_model, publish, stream)  # DDP when world > 1


def train_lrm(config: dict, rank: int, world: int, prepare_model, publish, stream=None) -> None:
    """Load this rank's data, train contrastively; rank 0 evaluates and publishes the LRM.

    `stream`: (latents, captions) batches of the latent shards, when Ray Data reads them.
    """
    from trainer.lrm import build_optimizer
    from trainer.lrm.latent_shards import peak_rss_mb
    from trainer.lrm.pretrain import contrastive_step, cosine_lr

    device = torch.device(config["device"])
    load = _latent_data if config["latents"] else _toy_data
    model, batches, eval_data = load(config, rank, world, device, stream)
    wrapped = prepare_model(model)
    optimizer = build_optimizer(model, lr=config["lr"], weight_decay=config["weight_decay"])
    minutes = config["max_minutes"]
    history, window, start = [], [], time.monotonic()
    deadline = start + 60 * minutes if minutes else None
    for step in range(1, config["steps"] + 1):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step - 1, config["steps"], config["lr"], config["warmup_steps"])
        data, batch = next(batches)
        window.append(contrastive_step(wrapped, optimizer, data, batch)["loss"])
        last = step == config["steps"] or _out_of_time(deadline, world)
        if last or step % config["eval_every"] == 0:
            history.append({"step": step, "loss": sum(window) / len(window),
                            "peak_rss_mb": round(peak_rss_mb(), 1)})
            window = []
            _report(model, eval_data if rank == 0 else None, history, config, start, publish)
        if last:
            break


def run_local(args: argparse.Namespace) -> dict:
    """`train_lrm` in this process on ``args.device`` (no Ray; e.g. one GPU), LRM to --output."""

    def publish(metrics: dict, folder: str | None) -> None:
        if folder is not None:
            _save_lrm(folder, args.output)
        print(json.dumps({k: v for k, v in metrics.items() if not k.endswith("num_latents")}),
              flush=True)

    if args.latents is None:
        _ensure_data(args)
    train_lrm(_config(args), 0, 1, lambda model: model, publish)
    return json.loads(storage.read_text(storage.join(args.output, METRICS_FILE)))


def _save_lrm(folder: str, output: str) -> None:
    """The LRM folder to `output` (a local path or an object-store URI), replacing it."""
    storage.remove(output)
    if storage.is_local(output):
        shutil.copytree(folder, storage.local_path(output))
    else:
        storage.upload_dir(folder, output)


def _ensure_data(args: argparse.Namespace, splits=("train", *EVAL_SPLITS)) -> None:
    from rglcd.toy.data import ensure_toy_dataset

    for split in splits:  # here, not in the workers: they would race
        n = args.n_train if split == "train" else args.n_eval
        ensure_toy_dataset(args.data_dir, split, n, args.seed)  # no-op when already built


def _config(args: argparse.Namespace) -> dict:
    """The arguments as a plain dict, paths absolute (what the training function reads)."""
    return {k: (str(v.resolve()) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def run(args: argparse.Namespace) -> dict:
    """Launch the TorchTrainer, copy the final checkpoint to ``args.output``, return metrics."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if args.latents is None:
        _ensure_data(args)
    if not ray.is_initialized():  # attaches to a running cluster (RAY_ADDRESS) or starts one
        ray.init(include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    config = _config(args)
    datasets = {}
    if args.latents is not None:  # streamed: Ray Train splits it between the workers
        from trainer.lrm.latent_shards import latent_dataset

        train_files, _ = split_shards(args.latents, args.heldout_shards)
        datasets["train"] = latent_dataset(train_files, args.seed, args.max_rows)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        datasets=datasets,
        scaling_config=ScalingConfig(num_workers=args.num_workers, use_gpu=args.use_gpu),
        run_config=RunConfig(
            **_ray_storage(args.storage_path),
            name=args.name or time.strftime("lrm-pretrain-%Y%m%d-%H%M%S"),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"LRM pretraining produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as checkpoint_dir:
        _save_lrm(checkpoint_dir, args.output)
    return json.loads(storage.read_text(storage.join(args.output, METRICS_FILE)))


def _ray_storage(location: str) -> dict:
    """RunConfig's storage arguments: a local folder, or an object store given its filesystem
    (so an S3-compatible endpoint from the AWS environment is used by every worker)."""
    if storage.is_local(location):
        return {"storage_path": storage.local_path(location)}
    fs, path = storage.parse(location)
    return {"storage_path": path, "storage_filesystem": fs}


def pretrain(argv: list[str] | None = None) -> dict:
    """The command's work; returns the saved LRM's metrics (or, with --evaluate, the metrics)."""
    for key, value in (("RAY_AUTH_MODE", "disabled"), ("RAY_USAGE_STATS_ENABLED", "0"),
                       ("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)
    args = parse_args(argv)
    if args.evaluate is not None:
        metrics = evaluate_saved(args)
        print(json.dumps(metrics, indent=2))
        return metrics
    report = run_local(args) if args.local else run(args)
    summary = {k: v for k, v in report.items() if k != "loss_history"}
    print(json.dumps(summary, indent=2))
    print(f"LRM saved to {args.output}")
    return report


def main(argv: list[str] | None = None) -> int:
    pretrain(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
