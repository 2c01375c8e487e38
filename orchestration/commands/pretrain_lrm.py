"""Pretrain the latent proxy reward model (LRM) with a CLIP loss, as a Ray Train job.

    rglcd-pretrain-lrm                   # toy world -> rglcd/toy/artifacts/lrm
    rglcd-pretrain-lrm optim.steps=50 output.dir=outputs/lrm-smoke
    rglcd-pretrain-lrm scaling.num_workers=2 optim.text_blocks=1
    rglcd-pretrain-lrm scaling.local=true scaling.device=cuda optim.steps=20000  # no Ray
    rglcd-pretrain-lrm --evaluate rglcd/toy/artifacts/lrm   # metrics only

(`rglcd-pretrain-lrm` is `python -m orchestration.commands.pretrain_lrm`; its settings are the
typed tree of orchestration/pretrain_lrm_config.py, from `--config FILE` and
`key.sub=value` overrides.) On real data, the latent shards of `rglcd-data-job` (no VAE
needed: they hold the latents) and a CLIP model folder for the text tower; the last shard is
held out:

    rglcd-pretrain-lrm --config configs/lrm/sd-latents.yaml \
        data.latents=/data/cc12m-latents-sd15-512 \
        data.clip_dir=/models/clip-vit-large-patch14 output.dir=/models/lrm-sd15-512 \
        scaling.num_workers=8 scaling.use_gpu=true optim.steps=20000 optim.batch_size=256

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

With ``data.latents`` (a local folder or an s3:// / gs:// URI) the training shards stream: Ray
Data splits them between the workers (a local run reads them batch by batch), so memory does
not grow with the number of rows (``python -m orchestration.bench.stream_memory lrm``); rank 0
reports retrieval on the held-out shard ("heldout_*" metrics); configs/lrm/sd-latents.yaml sizes the
latent tower for SD latents (patch 4, width 512, 12 blocks, 8 heads: the reference code's
ViT). The output folder is what the SD recipes' ``lrm.checkpoint`` loads.

Departures from the paper (appendix B): retrieval over captions instead of ImageNet zero-shot
classification (and toy data unless ``data.latents``); the text tower stays locked by default
(the paper "retains the original pretrained text encoder"; ``optim.text_blocks=N`` tunes its
last N blocks lightly), so the latent tower learns into the pretrained CLIP's text space.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from orchestration.paths import REPO_ROOT
from orchestration.pretrain_lrm_config import LRMPretrainConfig
from rglcd import storage
from rglcd.config_cli import config_from_args, config_parser, parse_config_args
from rglcd.paths import PACKAGES_ROOT
from rglcd.toy.data import ensure_toy_dataset, read_toy_images
from rglcd.toy.scenes import all_captions, parse_caption
from trainer.lrm import (
    LatentRewardModel,
    LatentTowerConfig,
    build_optimizer,
    pretrain_groups,
    set_trainable,
)
from trainer.lrm.latent_shards import (
    batch_split,
    latent_dataset,
    latent_split,
    local_batches,
    peak_rss_mb,
    ray_batches,
    read_manifest,
    split_shards,
)
from trainer.lrm.pretrain import (
    cache_caption_embeddings,
    contrastive_step,
    cosine_lr,
    evaluate_retrieval,
    prepare_split,
)

EVAL_SPLITS = ("validation", "heldout")
METRICS_FILE = "pretrain_metrics.json"


def parse_args(argv: list[str] | None = None) -> tuple[LRMPretrainConfig, Path | None]:
    """(the run's config, the LRM folder to only evaluate or None); exits 2 on a problem."""
    parser = config_parser(__doc__.split("\n\n")[0], "YAML with LRMPretrainConfig keys "
                           "(orchestration/pretrain_lrm_config.py)")
    parser.add_argument("--evaluate", type=Path, default=None, metavar="LRM_DIR",
                        help="only evaluate the LRM saved in LRM_DIR (no training, no Ray)")
    args = parse_config_args(parser, argv, LRMPretrainConfig)
    cfg = config_from_args(parser, LRMPretrainConfig, args)
    problems = cfg.missing_inputs()
    if cfg.data.latents is not None:
        try:
            split_shards(cfg.data.latents, cfg.data.heldout_shards)
        except ValueError as err:
            problems.append(f"data.latents: {err}")
    if problems:
        parser.error("\n  - ".join(["missing inputs:", *problems]))
    return cfg, args.evaluate


def _load_split(config: dict, split: str, vae, tokenizer, rank=0, world=1, caption_bank=None):
    images, captions = read_toy_images(config["data_dir"], split)
    images, captions = images[rank::world], captions[rank::world]
    return prepare_split(vae, tokenizer, images, captions, seed=config["seed"] + rank,
                         caption_bank=caption_bank)


def _load_eval_splits(config: dict, vae, tokenizer) -> dict:
    """validation / heldout ranked against their own distinct captions, and heldout against
    every caption of the toy grammar (448, as the mini CLIP's build report does)."""
    splits = {s: _load_split(config, s, vae, tokenizer) for s in EVAL_SPLITS}
    splits["heldout_all"] = _load_split(config, "heldout", vae, tokenizer,
                                        caption_bank=all_captions())
    return splits


def _build_model(config: dict, latent_channels: int, scaling_factor: float):
    torch.manual_seed(config["seed"])  # identical initial weights on every rank
    latent = LatentTowerConfig(
        latent_channels=latent_channels, patch_size=config["patch_size"],
        width=config["width"], depth=config["depth"], heads=config["heads"],
        mlp_ratio=config["mlp_ratio"],
    )
    model = LatentRewardModel.from_clip_dir(
        storage.local_copy(config["clip_dir"]), latent=latent, latent_scaling_factor=scaling_factor
    )
    set_trainable(model, pretrain_groups(model, text_blocks=config["text_blocks"]))
    return model


def _evaluate(model, eval_data: dict) -> dict:
    metrics = {}
    for split, data in eval_data.items():
        # Which attributes the latent tower sees (shape is the hard one at 8x8 latents).
        attributes = parse_caption if split == "heldout_all" else None
        result = evaluate_retrieval(model, data, attributes=attributes)
        metrics.update({f"{split}_{k}": v for k, v in result.items()})
    return metrics


def evaluate_saved(config: dict, lrm_dir: Path) -> dict:
    """Metrics of the LRM saved in ``lrm_dir`` on the toy eval splits (no Ray)."""
    model = LatentRewardModel.from_pretrained(lrm_dir).float().eval()
    if config["latents"] is not None:
        return _evaluate(model, _heldout_latents(config, model.tokenizer))
    _ensure_data(config, EVAL_SPLITS)
    vae = _load_vae(config)
    return _evaluate(model, _load_eval_splits(config, vae, model.tokenizer))


def _heldout_latents(config: dict, tokenizer) -> dict:
    _, heldout = split_shards(config["latents"], config["heldout_shards"])
    return {"heldout": latent_split(heldout, tokenizer)}


def _toy_data(config: dict, rank: int, world: int, device: torch.device, stream=None):
    """(model, this rank's batches, rank 0's eval splits): toy images VAE-encoded here.

    The toy split is small: it is held, and each step draws a random batch of it.
    """
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

    vae_source = {"pretrained_model_name_or_path": storage.local_copy(config["vae_dir"])} \
        if config["vae_dir"] else {"pretrained_model_name_or_path": storage.local_copy(
            storage.join(config["pipeline_dir"], "vae"))}
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


def run_local(config: dict) -> dict:
    """`train_lrm` in this process on its device (no Ray; e.g. one GPU), LRM to output.dir."""
    def publish(metrics: dict, folder: str | None) -> None:
        if folder is not None:
            _save_lrm(folder, config["output"])
        print(json.dumps({k: v for k, v in metrics.items() if not k.endswith("num_latents")}),
              flush=True)

    if config["latents"] is None:
        _ensure_data(config)
    train_lrm(config, 0, 1, lambda model: model, publish)
    return json.loads(storage.read_text(storage.join(config["output"], METRICS_FILE)))


def _save_lrm(folder: str, output: str) -> None:
    """The LRM folder to `output` (a local path or an object-store URI), replacing it."""
    storage.remove(output)
    if storage.is_local(output):
        shutil.copytree(folder, storage.local_path(output))
    else:
        storage.upload_dir(folder, output)


def _ensure_data(config: dict, splits=("train", *EVAL_SPLITS)) -> None:
    for split in splits:  # here, not in the workers: they would race
        n = config["n_train"] if split == "train" else config["n_eval"]
        ensure_toy_dataset(Path(config["data_dir"]), split, n, config["seed"])  # no-op if built


def run(config: dict) -> dict:
    """Launch the TorchTrainer, copy the final checkpoint to output.dir, return metrics."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.constants import RAY_CHDIR_TO_TRIAL_DIR
    from ray.train.torch import TorchTrainer

    # The workers keep the node's working directory (relative inputs are read from there).
    os.environ.setdefault(RAY_CHDIR_TO_TRIAL_DIR, "0")
    if config["latents"] is None:
        _ensure_data(config)
    if not ray.is_initialized():  # attaches to a running cluster (RAY_ADDRESS) or starts one
        ray.init(include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"PYTHONPATH": str(PACKAGES_ROOT)}})
    datasets = {}
    if config["latents"] is not None:  # streamed: Ray Train splits it between the workers
        train_files, _ = split_shards(config["latents"], config["heldout_shards"])
        datasets["train"] = latent_dataset(train_files, config["seed"], config["max_rows"])
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        datasets=datasets,
        scaling_config=ScalingConfig(num_workers=config["num_workers"],
                                     use_gpu=config["use_gpu"]),
        run_config=RunConfig(
            **_ray_storage(config["storage_path"]),
            name=config["name"] or time.strftime("lrm-pretrain-%Y%m%d-%H%M%S"),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"LRM pretraining produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as checkpoint_dir:
        _save_lrm(checkpoint_dir, config["output"])
    return json.loads(storage.read_text(storage.join(config["output"], METRICS_FILE)))


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
    cfg, lrm_dir = parse_args(argv)
    config = cfg.worker_config()
    if lrm_dir is not None:
        metrics = evaluate_saved(config, lrm_dir)
        print(json.dumps(metrics, indent=2))
        return metrics
    report = run_local(config) if cfg.scaling.local else run(config)
    summary = {k: v for k, v in report.items() if k != "loss_history"}
    print(json.dumps(summary, indent=2))
    print(f"LRM saved to {config['output']}")
    return report


def main(argv: list[str] | None = None) -> int:
    pretrain(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
