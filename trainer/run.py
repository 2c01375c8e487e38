"""RG-LCD on Ray Train: distil a latent diffusion teacher into a 1-4 step consistency model.

With no arguments it runs the embedded default on this machine: the full method, RG-LCD +
LRM, on the toy world (a miniature SD on 32x32 scenes), the latent proxy RM learning from the
non-differentiable toy judge that the reward service (Ray Serve, deployed here if absent)
serves; with a config it runs the same code on real checkpoints and GPUs.

    python trainer/run.py [--config configs/toy-rglcd-toy-clip.yaml] [key.sub=value ...]
    rglcd-train [--config toy-rglcd-toy-clip] [key.sub=value ...]       # from any directory
    ray job submit --working-dir . -- python trainer/run.py [--config FILE] [key.sub=value ...]

The first form (also `rglcd-train`) starts a local Ray instance, dashboard included
(http://127.0.0.1:8265 or the next free port, printed at start), unless RAY_ADDRESS names a
cluster; the second runs on the cluster that `ray start --head` (with its dashboard) started.
Outputs land in `<output.root_dir>/<run_name>`, a local or NFS path or an s3:// / gs:// URI
(docs/cluster.md, Storage): checkpoints (Ray Train's storage), metrics, samples, report and the
exported pipeline, all written there; the driver prints where. A relative path is relative to
the driver's working directory, so on a cluster whose nodes share no disk give a URI. Model
folders (model.teacher, lrm.checkpoint, scorer checkpoints) are opened on the node that loads
them: `pkg://` locations in that node's copy of the package, URIs copied once per node into its
cache. Rerunning with the same run name resumes from its last checkpoint. Everything that can be checked is checked
before Ray starts: a bad config fails in a second with a message naming the key to change. The
console shows one progress line; the workers' and the reward service's logs (Serve access
logs, library warnings) stay in Ray's log files, which the dashboard's Logs page shows.

Deliberate departures from the paper (RG-LCD, Li et al.) and its reference code: the complete
list is docs/method.md §9 (among them: eq. 12's KL taken as KL(Q || P) as the reference code
does, fixed tau_L = tau_E = 0.01, toy learning rates of 1e-4 for the student and the LRM,
beta 3 for the LRM, 600 steps of 16, asynchronous expert scores, seeded per-sample noise).
"""

from __future__ import annotations

import argparse
import os
import posixpath
import sys
import time

# `python trainer/run.py` puts trainer/ first on sys.path: the imports below resolve through
# the installed package (`make env`; Ray's working_dir puts the job's copy on PYTHONPATH),
# and no module in trainer/ takes a top-level package's name (tests/unit/test_entry_points.py).
from reward_service.scorers.registry import describe_scorer
from rglcd import storage
from rglcd.configuration import ConfigError
from rglcd.recipes import DEFAULT_RECIPE
from rglcd.shared_disk import nodes_not_seeing
from trainer.cluster.faults import worker_env
from trainer.cluster.placement import check_gpu_placement
from trainer.cluster.ray_connect import connect_ray, encoder_actors
from trainer.cluster.worker import train_loop_per_worker
from trainer.config import RGLCDConfig, load_trainer_config
from trainer.config_checks import isolated_direct_reward_problem
from trainer.data import build_train_dataset, parquet_columns, parquet_files, shard_format
from trainer.loop import optimizer_class
from trainer.models import check_teacher_source
from trainer.reward.capacity import capacity_warnings
from trainer.run_outputs.checkpointing import verify_checkpoint
from trainer.run_outputs.curves import CURVES_FILE, agreement_trend, plot_curves
from trainer.run_outputs.layout import LORA_SUBDIR, PIPELINE_SUBDIR, SAMPLES_SUBDIR
from trainer.run_outputs.monitoring import METRICS_FILE, MetricsFollower, ProgressLine, read_metrics
from trainer.run_outputs.report import write_run_report

TOY_TRAIN_ROWS = 10_000
TOY_DATA_SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", default=str(DEFAULT_RECIPE),
        help="YAML recipe (only what differs from trainer/config.py), a path or a shipped "
        "recipe's name (e.g. toy-lcd); default: the full method on the toy world, "
        "toy-rglcd-lrm-toy-judge.yaml.",
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides.")
    return parser.parse_args(argv)


def run_storage(cfg: RGLCDConfig) -> str:
    """The run's storage as this driver sees it (a relative path made absolute here, where
    Ray Train's storage is set up); printed so a user knows where the outputs go."""
    location = cfg.output_dir
    return storage.local_path(location) if storage.is_local(location) else location


def check_storage_is_shared(cfg: RGLCDConfig) -> None:
    """On a cluster of several nodes a local output path must be a disk every node mounts:
    checked before any training worker starts (ValueError naming the nodes that miss it)."""
    missing = nodes_not_seeing(cfg.output_dir)
    if missing:
        raise ValueError(
            f"output.root_dir={cfg.output.root_dir!r} is a local path that {len(missing)} "
            f"node(s) of this cluster cannot see: {', '.join(missing)}. The run's storage must "
            "be shared by every node: set output.root_dir to an s3:// or gs:// URI, or to an "
            "NFS path every node mounts (docs/cluster.md, Storage)."
        )


def validate_before_ray(cfg: RGLCDConfig) -> None:
    """Checks that need files but no Ray: teacher, reward model, data shards (ValueError)."""
    problems = []
    if cfg.lcd.optimizer != "adamw":
        try:
            optimizer_class(cfg.lcd.optimizer)
        except ValueError as err:
            problems.append(str(err))
    try:
        teacher_type = check_teacher_source(
            cfg.model.teacher, cfg.model.revision, cfg.model.family
        )
        wanted = cfg.model.prediction_type
        if wanted not in ("auto", teacher_type):
            problems.append(
                f"model.prediction_type={wanted!r} differs from the teacher scheduler's "
                f"{teacher_type!r}; set model.prediction_type=auto (or {teacher_type})."
            )
    except ValueError as err:
        problems.append(str(err))
    if cfg.uses_lrm:
        try:  # any kind may be the expert; its options and checkpoint must still be valid
            describe_scorer(cfg.serve.scorer(cfg.lrm.expert))
        except ValueError as err:
            problems.append(f"lrm.expert={cfg.lrm.expert!r}: {err}")
    elif cfg.reward.enabled:  # differentiable: checked when the config loaded (config_checks.py)
        try:
            info = describe_scorer(cfg.serve.scorer(cfg.reward.model))
            if info.isolated_env:
                problems.append(isolated_direct_reward_problem(cfg.reward.model, info.kind))
        except ValueError as err:
            problems.append(f"reward.model={cfg.reward.model!r}: {err}")
    if not cfg.uses_toy_data:
        problems += _data_problems(cfg)
    if problems:
        raise ConfigError("\n  - ".join(["the run cannot start:", *problems]), problems)


def _data_problems(cfg: RGLCDConfig) -> list[str]:
    data = cfg.data
    try:
        files = parquet_files(cfg.train_data_path)
        columns = parquet_columns(files[0])
        names = (data.image_column, data.latent_column, data.caption_column)
        shard_format(columns, *names, data.format)
    except (ValueError, OSError) as err:
        return [str(err)]
    return []


def prepare_toy_data(cfg: RGLCDConfig) -> None:
    """The toy default: render the training scenes into Parquet shards in the run's storage
    (<output.root_dir>/toy-data) if they are missing."""
    if cfg.uses_toy_data:
        from rglcd.toy.data import ensure_toy_dataset  # deferred: loads pyarrow

        ensure_toy_dataset(cfg.train_data_path, "train", TOY_TRAIN_ROWS, TOY_DATA_SEED)


def ensure_reward_service(cfg: RGLCDConfig) -> str | None:
    """Deploy the reward-service app (serve.scorers + serve.vaes) unless it already runs; the
    workers reach it by `serve.app_name`. Returns that name, or None when no service is needed.

    Only the latent-proxy mode needs it (the expert's scores); direct mode scores in-process.
    A running app must hold the expert scorer and its VAE (ValueError otherwise).
    """
    if not cfg.uses_lrm:
        return None
    from ray import serve

    from reward_service.app import (  # deferred: loads fastapi, ray
        build_app,
        scorer_deployment_name,
        vae_deployment_name,
    )
    from reward_service.client import wait_for_app  # deferred: loads fastapi, ray

    name = cfg.serve.app_name
    app = serve.status().applications.get(name)
    if app is None or app.status != "RUNNING":
        serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
        serve.run(build_app(cfg.serve), name=name, route_prefix=cfg.serve.route_prefix)
        wait_for_app(name)
        app = serve.status().applications[name]
    wanted = {scorer_deployment_name(cfg.lrm.expert), vae_deployment_name(cfg.expert_vae_name)}
    missing = sorted(wanted - set(app.deployments))
    if missing:
        raise ValueError(
            f"the running Serve app {name!r} has no deployment {missing}; pick another "
            f"serve.app_name (with its own serve.route_prefix), or delete the cluster's Serve "
            "apps (`serve shutdown`)"
        )
    return name


def with_absolute_output(cfg: RGLCDConfig) -> RGLCDConfig:
    """A relative local output.root_dir or output.dir means the driver's working directory:
    made absolute here, so the workers (whose working directory may be another) write where
    the driver reads and prints."""
    for key in ("root_dir", "dir"):
        location = getattr(cfg.output, key)
        if location is not None and storage.is_local(location):
            setattr(cfg.output, key, storage.local_path(location))
    return cfg


def build_trainer(cfg: RGLCDConfig):
    """The TorchTrainer: scaling, DDP backend, storage (resume by name), failures, data."""
    from ray.data import DataContext, ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.constants import RAY_CHDIR_TO_TRIAL_DIR
    from ray.train.torch import TorchConfig, TorchTrainer

    DataContext.get_current().enable_progress_bars = False  # the driver shows its own line
    # Ray Train would move each worker into a working folder of its own: a relative path in
    # the config means the node's working directory (the job's, under `ray job submit`).
    os.environ.setdefault(RAY_CHDIR_TO_TRIAL_DIR, "0")
    scaling = cfg.scaling
    gpus = scaling.gpus_per_worker
    gpus = float(scaling.use_gpu) if gpus is None else gpus
    data = cfg.data
    dataset = build_train_dataset(
        parquet_files(cfg.train_data_path),
        cfg.model.vae or cfg.model.teacher,
        cfg.model.resolution,
        cfg.seed,
        fmt=data.format,
        columns=(data.image_column, data.latent_column, data.caption_column),
        encoder_actors=encoder_actors(cfg),
        revision=None if cfg.model.vae else cfg.model.revision,
    )
    # Ray Train's storage is the run's: (filesystem, path) from rglcd/storage.py, so an s3://
    # endpoint from the AWS environment (an S3-compatible store) reaches Ray Train too.
    filesystem, run_path = storage.parse(cfg.output_dir)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json")},
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker={
                "CPU": scaling.cpus_per_worker, "GPU": gpus, **scaling.resources
            },
        ),
        run_config=RunConfig(
            storage_path=posixpath.dirname(run_path),
            storage_filesystem=filesystem,
            name=posixpath.basename(run_path),
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.output.keep_checkpoints),
            worker_runtime_env=worker_env(),  # trainer/cluster/faults.py's test variables
        ),
        datasets={"train": dataset},
        # Unsplit + ordered: each worker slices the same global batches (trainer/data.py).
        dataset_config=DataConfig(
            datasets_to_split=[], execution_options=ExecutionOptions(preserve_order=True)
        ),
    )


def fit(cfg: RGLCDConfig):
    """Run the TorchTrainer with a progress line fed from metrics.jsonl; return its Result."""
    location = storage.join(cfg.output_dir, METRICS_FILE)
    follower = MetricsFollower(location, ProgressLine(cfg.lcd.max_steps))
    follower.start()
    try:
        return build_trainer(cfg).fit()
    finally:
        follower.stop()


def write_report(cfg: RGLCDConfig, seconds: float) -> str:
    output_dir = run_storage(cfg)
    grids = storage.list_files(storage.join(output_dir, SAMPLES_SUBDIR), "*.png")
    rows = read_metrics(storage.join(output_dir, METRICS_FILE))
    with storage.staged_file(storage.join(output_dir, CURVES_FILE)) as path:
        curves = plot_curves(rows, path) and storage.join(output_dir, CURVES_FILE)
    lora = cfg.model.lora
    pipeline = storage.join(output_dir, PIPELINE_SUBDIR)
    adapters = storage.join(output_dir, LORA_SUBDIR)
    extra = {
        "pipeline": pipeline if not lora or lora.export_fused else "none",
        "lora adapters": adapters if lora else "none (full-UNet student)",
        "checkpoints": output_dir,
        "sample grids": grids,
        "training curves": curves or "no metrics logged",
        "wall time (s)": round(seconds, 1),
    }
    trend = agreement_trend(rows)
    if trend is not None:
        extra["LRM-expert agreement, first vs last third of updates"] = (
            f"{trend[0]:.3f} -> {trend[1]:.3f}"
        )
    return write_run_report(output_dir, cfg, extra=extra)


def check_resume_checkpoint(cfg: RGLCDConfig) -> str | None:
    """Verify the checkpoint a rerun of this run name resumes from, on the driver.

    Ray Train resumes from the newest ``checkpoint_<time>`` folder of the run's directory;
    a corrupt or partial one raises CheckpointError here, before Ray starts (each worker
    verifies again when it loads). In object storage it is not downloaded here: each worker
    verifies its downloaded copy. Returns the newest checkpoint's location, or None.
    """
    found = storage.list_dirs(cfg.output_dir, "checkpoint_*")
    if not found:
        return None
    if storage.is_local(found[-1]):
        verify_checkpoint(storage.local_path(found[-1]))
    return found[-1]


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    try:
        cfg = with_absolute_output(load_trainer_config(args.config, args.overrides))
        validate_before_ray(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for warning in capacity_warnings(cfg):
        print(f"warning: {warning}", file=sys.stderr)
    try:
        check_resume_checkpoint(cfg)
    except RuntimeError as err:  # CheckpointError: say so before any Ray work starts
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Run storage: {run_storage(cfg)}", flush=True)
    prepare_toy_data(cfg)
    connect_ray(cfg)
    try:
        check_storage_is_shared(cfg)
        check_gpu_placement(cfg)
        ensure_reward_service(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    fit(cfg)
    report = write_report(cfg, time.perf_counter() - start)
    print(f"RG-LCD run finished in {time.perf_counter() - start:.0f} s.")
    exported = "lora/" if cfg.model.lora else "pipeline/"
    print(f"Outputs: {run_storage(cfg)} ({exported}, report: {storage.basename(report)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
