"""Rehearse the real path end to end on CPU, with tiny models of the real classes.

    rglcd-rehearse --workdir outputs/rehearsal
    rglcd-rehearse --workdir outputs/rehearsal --nodes 3 [--failures]   # as root
    rglcd-rehearse --workdir outputs/rehearsal \\
        --imagereward-python <venv>/bin/python     # also ImageReward as the LRM expert

(`rglcd-rehearse` is `python -m orchestration.commands.rehearse_real_path`.)

It starts one head node of its own (`ray start --head`, orchestration/local_head.py) and
submits each stage to it with `ray job submit --working-dir .`, the command of docs/cluster.md
that a user with SD weights types, with only paths and sizes overridden:

  1. python -m orchestration.commands.data_job       WebDataset tars -> latent Parquet shards
     (Ray Data)
  2. python -m orchestration.commands.pretrain_lrm   data.latents=: the LRM on those shards
     (Ray Train)
  3. python trainer/run.py --config configs/sd21-rglcd-lrm-vlm-judge.yaml   RG-LCD + LRM, the VLM
     judge as expert, served by Ray Serve and asking an OpenAI-compatible server over HTTP
  4. python trainer/run.py --config configs/sd15-rglcd-lrm-imagereward.yaml   the same with
     ImageReward as expert in its own environment (only with --imagereward-python: an
     environment holding reward_service/scorers/imagereward-requirements.txt)
  5. python -m orchestration.commands.evaluate --config configs/eval/sd15.yaml   the exported
     RG-LCMs against the teacher, scored by HPSv2.1, CLIPScore, PickScore (and ImageReward)

The stand-ins it builds first: a tiny StableDiffusionPipeline folder and a tiny CLIPModel
folder (rglcd/tiny_models.py; the CLIP is the LRM's text tower, CLIPScore and PickScore), a
tiny open_clip HPSv2.1 checkpoint, WebDataset shards of rendered scenes, an HPSv2-style prompt
file, the judge server (orchestration/rehearsal/judge_server.py) and, with --imagereward-python,
ImageReward's real architecture with random weights as ImageReward.pt plus an offline
`bert-base-uncased` tokenizer, and one image scored there by the package's `score()` and
by this project's ImageRewardScorer, which must agree (orchestration/rehearsal/imagereward_check.py).
With `--nodes 3` the cluster is a head and two worker nodes that share no disk, each worker
node in a mount namespace of its own (orchestration/cluster_rehearsal/), and an S3-compatible
store on loopback (moto's server): the stand-ins are uploaded there and every stage reads and
writes `s3://` locations only; the two training workers run one per worker node, the reward
service on the head. A probe job checks first that a file one node writes is invisible to
the other. `--failures` then runs the failure cases on the same cluster
(orchestration/cluster_rehearsal/failures.py). `--toy-steps N` runs the default toy recipe
there too, its reward service on a node of its own, which `--failures` kills mid-run
(orchestration/cluster_rehearsal/toy_default.py).
Each trainer run deploys its expert as a Serve app of its own name and route. Every stage's
output is checked (LRM folder loads, the trainer applied LRM updates from the expert's scores, the
export loads in DiffusionPipeline, the evaluation wrote its table); a JSON summary with each
stage's seconds ends the output. Departure from a real run: tiny random models and a handful
of steps, so the numbers mean nothing; only that every piece connects.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

from orchestration.cluster_rehearsal import failures, rehearsal, toy_default
from orchestration.local_head import free_port, private_head, run_job
from rglcd import storage
from rglcd.paths import PACKAGES_ROOT
from rglcd.toy.scenes import render, sample_scenes

RESOLUTION = 32
IMAGES = 48  # 6 shards of 8: 5 to train on, the last one held out by rglcd-pretrain-lrm
# Per-step timings every trainer row of metrics.jsonl carries.
TIMINGS = {"time_data", "time_teacher", "time_student", "time_optimizer"}
JUDGE = "orchestration.rehearsal.judge_server"  # modules run with `python -m`
IMAGEREWARD_CHECK = "orchestration.rehearsal.imagereward_check"
# The package's PIL path and the scorer's tensor path resize the same image: same score up to
# float32 rounding of a 224 px ViT-L forward.
SCORE_TOLERANCE = 1e-4
# ImageReward's ViT-L/16 is the heavy model of the rehearsal: two intra-op threads (Ray sets a
# replica's OMP_NUM_THREADS from its CPUs) instead of the default 0.5 CPU's one.
IMAGEREWARD_CPUS = 2
HPS_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
STYLES = {"anime": ["a red circle on a blue background", "a small green square"],
          "photo": ["a large yellow triangle", "a white cross on a black background"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("outputs") / "rehearsal")
    parser.add_argument("--imagereward-python", type=Path, default=None,
                        help="python of an environment with ImageReward's pins (stage 4)")
    parser.add_argument("--steps", type=int, default=3, help="trainer steps per run")
    parser.add_argument("--nodes", type=int, choices=(1, 3), default=1,
                        help="3: a head and two worker nodes without a shared disk (needs root)")
    parser.add_argument("--failures", action="store_true",
                        help="with --nodes 3: also the node-loss and store-outage cases")
    parser.add_argument("--toy-steps", type=int, default=0,
                        help="with --nodes 3: also the default toy recipe for this many steps "
                        "(600: as `python trainer/run.py`), driver and workers on other nodes; "
                        "with --failures its expert's node is lost mid-run")
    return parser.parse_args(argv)


def write_webdataset(folder: Path, n: int, per_tar: int = 16) -> None:
    """img2dataset-layout tars of rendered toy scenes (JPEG + caption), 64 px."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    scenes = sample_scenes("train", n, seed=0)
    for start in range(0, n, per_tar):
        with tarfile.open(folder / f"{start // per_tar:05d}.tar", "w") as tar:
            for i, scene in enumerate(scenes[start : start + per_tar], start):
                buffer = BytesIO()
                Image.fromarray(render(scene)).resize((64, 64)).save(buffer, format="JPEG")
                for suffix, data in (("jpg", buffer.getvalue()), ("txt", scene.caption.encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, BytesIO(data))


def write_tiny_hps(folder: Path) -> tuple[Path, Path]:
    """(open_clip model config, checkpoint laid out like HPS_v2.1_compressed.pt)."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "tiny-hps-clip.json"
    config.write_text(json.dumps(HPS_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    checkpoint = folder / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": open_clip.create_model("tiny-hps-clip").state_dict()}, checkpoint)
    return config, checkpoint


def build_inputs(work: Path, imagereward_python: Path | None) -> tuple[dict, dict | None]:
    """(paths of the stand-ins, ImageReward's environment check or None without it)."""
    from rglcd.tiny_models import (  # deferred: loads diffusers, torch, transformers
        save_tiny_clip_model,
        save_tiny_sd_pipeline,
    )

    models = work / "models"
    paths = {
        "sd": save_tiny_sd_pipeline(models / "stable-diffusion-v1-5"),
        "clip": save_tiny_clip_model(models / "clip", image_size=32),
        "wds": work / "data" / "wds",
        "prompts": work / "data" / "hpsv2_test_prompts.json",
    }
    paths["hps_config"], paths["hps"] = write_tiny_hps(models / "hps")
    write_webdataset(paths["wds"], IMAGES)
    paths["prompts"].write_text(json.dumps(STYLES))
    check = None
    if imagereward_python is not None:
        folder = models / "ImageReward"
        check = check_imagereward_env(folder, imagereward_python)
        paths["imagereward"], paths["hf_home"] = folder / "ImageReward.pt", folder / "hf"
        paths["imagereward_dir"] = folder
        paths["imagereward_med_config"] = folder / "med_config.json"
    return {k: str(v) for k, v in paths.items()}, check


def check_imagereward_env(folder: Path, python: Path) -> dict:
    """Inside ImageReward's own environment (orchestration/rehearsal/imagereward_check.py): its real
    architecture with random weights as <folder>/ImageReward.pt, an offline tokenizer in
    <folder>/hf, and one image scored by the package's `score()` and by this project's scorer,
    which must agree. Returns the check's JSON (versions, both scores, seconds)."""
    # That environment does not hold this project: PYTHONPATH lends it this project's packages.
    env = {**os.environ, "HF_HOME": str(folder / "hf"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(PACKAGES_ROOT)}
    run = subprocess.run([str(python), "-m", IMAGEREWARD_CHECK, str(folder)], env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"ImageReward's environment failed its check:\n{run.stderr[-3000:]}")
    check = json.loads(run.stdout.strip().splitlines()[-1])
    if abs(check["scorer_score"] - check["package_score"]) > SCORE_TOLERANCE:
        raise RuntimeError(f"ImageRewardScorer disagrees with the package's score(): {check}")
    return check


@contextmanager
def judge_server():
    """The OpenAI-compatible judge as its own process; yields its /v1 base URL."""
    proc = subprocess.Popen([sys.executable, "-m", JUDGE, "--port", "0", "--model", "judge"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the judge server did not start: {line!r}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def trainer_overrides(paths: dict, run_name: str, steps: int, out: Path) -> list[str]:
    """Sizes and paths only: the recipe's algorithm settings stay as they are."""
    return [
        f"model.teacher={paths['sd']}", f"model.resolution={RESOLUTION}",
        "model.mixed_precision=no", f"data.train_path={paths['latents']}",
        f"lrm.checkpoint={paths['lrm']}", "lrm.batch_size=2", "lrm.max_staleness_steps=2",
        "lrm.request_timeout_s=120", f"lcd.max_steps={steps}", "lcd.global_batch_size=4",
        # The GPU fractions of the recipes' 8-GPU layout do not apply on CPU workers.
        "scaling.num_workers=1", "scaling.use_gpu=false", "scaling.gpus_per_worker=0",
        "serve.vaes.teacher.num_gpus=0",
        "serve.scorers.0.num_gpus=0", f"serve.port={free_port()}",
        f"output.root_dir={out}", f"run_name={run_name}", "output.log_every=1",
        f"output.checkpoint_every={steps}", f"output.sample_every={steps}",
    ]


def read_metrics(run_dir: str) -> list[dict]:
    text = storage.read_text(storage.join(run_dir, "metrics.jsonl"))
    return [json.loads(line) for line in text.splitlines()]


def check_training(run_dir: str, job_log: Path) -> dict:
    """LRM updates came from the expert's scores; checkpoint, samples and report are there;
    the export loads in DiffusionPipeline; the job's own output came back to the submitter.
    `run_dir` is a local path or an object-store URI."""
    from diffusers import DiffusionPipeline

    rows = read_metrics(run_dir)
    files = [f[len(run_dir) + 1:] for f in storage.list_files(run_dir, recursive=True)]
    updates = sum(r.get("lrm_updates", 0) for r in rows)
    if updates < 1:
        raise RuntimeError(f"{run_dir}: no LRM update from the expert's scores: {rows[-1]}")
    missing = [what for what, found in (
        ("a positive loss at every step", all(r["loss"] > 0 for r in rows)),
        ("the step timings", TIMINGS <= rows[0].keys()),
        ("report.md", "report.md" in files),
        ("a sample grid", any(f.startswith("samples/") and f.endswith(".png") for f in files)),
        ("a checkpoint", any(f.startswith("checkpoint_") and f.endswith("/manifest.json")
                             for f in files)),
        ("the job's 'Outputs:' line", f"Outputs: {run_dir}" in job_log.read_text()),
    ) if not found]
    if missing:
        raise RuntimeError(f"{run_dir}: missing {', '.join(missing)}")
    pipe = DiffusionPipeline.from_pretrained(storage.local_copy(storage.join(run_dir, "pipeline")))
    return {"lrm_updates": updates, "pipeline": type(pipe).__name__,
            "steps": [r["step"] for r in rows],
            "lrm_expert_agreement": [r["lrm_expert_agreement"] for r in rows
                                     if "lrm_expert_agreement" in r]}


def eval_overrides(paths: dict, runs: dict, out: str) -> list[str]:
    models = [f"{{name: teacher, kind: teacher, path: {paths['sd']}, steps: [4], "
              "sampler: ddim, guidance_scale: 7.5}"]
    models += [f"{{name: {name}, kind: lcm, path: {storage.join(run, 'pipeline')}, steps: [2, 4]}}"
               for name, run in runs.items()]
    scorers = [
        f"{{name: hpsv2.1, kind: hpsv2.1, checkpoint: {paths['hps']}, num_cpus: 0.25, "
        f"options: {{model_config: {paths['hps_config']}}}}}",
        f"{{name: pickscore, kind: pickscore, checkpoint: {paths['clip']}, "
        f"processor: {paths['clip']}, num_cpus: 0.25}}",
        f"{{name: clipscore, kind: clipscore, checkpoint: {paths['clip']}, num_cpus: 0.25}}",
    ]
    if "imagereward" in paths:
        scorers.append(f"{{name: imagereward, kind: imagereward, checkpoint: "
                       f"{paths['imagereward']}, num_cpus: {IMAGEREWARD_CPUS}}}")
    first = next(iter(runs))
    return [
        f"models=[{', '.join(models)}]", f"prompts={paths['prompts']}", "max_prompts=2",
        f"scoring.scorers=[{', '.join(scorers)}]", "scoring.batch_size=8",
        f"win_rates.pairs=[[{first}@2, teacher@4]]", "generation.num_gpus_per_task=0",
        "generation.batch_size=4", "generation.num_cpus_per_task=0.5", f"output.dir={out}",
    ]


def rehearse(args: argparse.Namespace) -> dict:
    """Build the stand-ins, start the cluster and submit each stage to it as a Ray job."""
    work = args.workdir.resolve()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    seconds, checks = {}, {}
    start = time.perf_counter()
    paths, imagereward_env = build_inputs(work, args.imagereward_python)
    job_env = {"TOKENIZERS_PARALLELISM": "false"}
    if args.imagereward_python is not None:
        job_env |= {"RGLCD_IMAGEREWARD_PYTHON": str(args.imagereward_python),
                    "HF_HOME": paths["hf_home"]}
    if imagereward_env is not None:
        checks["imagereward_env"] = imagereward_env
    seconds["inputs"] = time.perf_counter() - start
    if args.nodes == 1:
        with private_head(num_cpus=8) as head:
            seconds["cluster"] = time.perf_counter() - start - seconds["inputs"]
            stages = run_stages(paths, str(work), args.steps, head, job_env, logs, [])
    else:
        stages = rehearse_on_three_nodes(args, paths, job_env, logs)
    seconds |= stages.pop("seconds")
    checks |= stages
    seconds["total"] = time.perf_counter() - start
    return {"seconds": {k: round(v, 1) for k, v in seconds.items()}, "checks": checks}


def rehearse_on_three_nodes(args: argparse.Namespace, paths: dict, env: dict, logs: Path) -> dict:
    """The stages (and with --failures the failure cases) on a head and two worker nodes that
    share no disk, with every location in the loopback object store."""
    start = time.perf_counter()
    checks: dict = {}
    try:
        with rehearsal.three_nodes() as (store, cluster):
            seconds = on_three_nodes(args, store, cluster, paths, env, logs, checks)
    finally:  # what was checked so far, also when a later stage fails
        (logs / "checks.json").write_text(json.dumps(checks, indent=2, default=str))
    return checks | {"seconds": seconds | {"three_nodes": time.perf_counter() - start}}


def on_three_nodes(args: argparse.Namespace, store, cluster, paths: dict, env: dict,
                   logs: Path, checks: dict) -> dict:
    """Fills `checks` stage by stage; returns each stage's seconds."""
    start = time.perf_counter()
    os.environ.update(store.env)  # the submitter's own checks read the store too
    seconds: dict = {}
    env = env | store.env
    if "hf_home" in paths:  # the offline tokenizer is part of each node's image
        env["HF_HOME"] = rehearsal.node_image_copy(paths["hf_home"])
    paths = rehearsal.upload_inputs(store, paths)
    checks["isolation"] = rehearsal.check_isolation(cluster, store, env)
    seconds["isolation"] = time.perf_counter() - start
    stages = run_stages(paths, store.uri(), args.steps, cluster.url, env, logs,
                        rehearsal.TRAINER_PLACEMENT + rehearsal.SERVICE_ON_HEAD)
    seconds |= stages.pop("seconds")
    checks |= stages
    mark = time.perf_counter()
    checks["local_output_refused"] = failures.local_output_refused(cluster, paths, env, logs)
    seconds["negative_control"] = time.perf_counter() - mark
    if args.failures:
        checks["failures"] = {}
        for case in (failures.node_loss, failures.store_outage):
            found = case(store, cluster, paths, env, logs)
            seconds |= found.pop("seconds")
            checks["failures"][case.__name__] = found
    if args.toy_steps:  # with --failures, the expert's node is lost mid-run
        checks["toy_default"] = toy_default.run(store, cluster, env, logs, args.toy_steps,
                                                lose_expert_host=args.failures)
        seconds["toy_default"] = checks["toy_default"].pop("seconds")
    return seconds


def run_stages(paths: dict, root: str, steps: int, head: str, env: dict, logs: Path,
               placement: list[str]) -> dict:
    """The five stages as Ray jobs; every output under `root` (a folder or an object-store
    URI); `placement`: trainer overrides that say where its workers run."""
    seconds, checks = {}, {}
    paths["latents"] = storage.join(root, "data", "latents")
    paths["lrm"] = storage.join(root, "models", "lrm")
    seconds["data_job"] = run_job("1-data_job", [
        "python", "-m", "orchestration.commands.data_job", f"input={paths['wds']}",
        f"output={paths['latents']}", f"teacher={paths['sd']}", f"resolution={RESOLUTION}",
        "rows_per_shard=8", "batch_size=8", "encoders=1", "min_size=32", "overwrite=true",
    ], head, env, logs)
    checks["data_job"] = json.loads(storage.read_text(storage.join(
        paths["latents"], "manifest.json")))["num_written"]
    seconds["pretrain_lrm"] = run_job("2-pretrain_lrm", [
        "python", "-m", "orchestration.commands.pretrain_lrm", f"data.latents={paths['latents']}",
        f"data.clip_dir={paths['clip']}",
        f"output.dir={paths['lrm']}", "optim.steps=4",
        "optim.eval_every=4", "optim.batch_size=8", "tower.patch_size=2", "tower.width=32",
        "tower.depth=1", "tower.heads=2", "optim.warmup_steps=1", "scaling.num_workers=1",
        f"output.storage_path={storage.join(root, 'ray_results')}"], head, env, logs)
    from trainer.lrm import LatentRewardModel  # deferred: loads torch, transformers

    LatentRewardModel.from_pretrained(storage.local_copy(paths["lrm"]))
    metrics = json.loads(storage.read_text(storage.join(paths["lrm"], "pretrain_metrics.json")))
    checks["pretrain_lrm"] = {k: metrics[k] for k in ("heldout_top1", "heldout_top5")}
    out = storage.join(root, "runs")
    runs = train_both(paths, out, steps, head, env, logs, placement, seconds, checks)
    eval_dir = storage.join(root, "eval")
    seconds["evaluate"] = run_job("5-evaluate", [
        "python", "-m", "orchestration.commands.evaluate", "--config", "configs/eval/sd15.yaml",
        *eval_overrides(paths, runs, eval_dir)], head, env, logs)
    results = json.loads(storage.read_text(storage.join(eval_dir, "results.json")))
    checks["evaluate"] = {"rows": [r["label"] for r in results["rows"]],
                          "scorers": results["scorers"]}
    return checks | {"seconds": seconds}


def train_both(paths: dict, out: str, steps: int, head: str, env: dict, logs: Path,
               placement: list[str], seconds: dict, checks: dict) -> dict:
    """Stages 3 and 4: RG-LCD + LRM with the VLM judge, then with ImageReward, as experts."""
    runs = {}
    with judge_server() as url:
        recipes = [("vlm-judge", "configs/sd21-rglcd-lrm-vlm-judge.yaml",
                    [f"serve.scorers.0.options.base_url={url}", "serve.scorers.0.options.model=judge"])]
        if "imagereward" in paths:
            recipes.append(("imagereward", "configs/sd15-rglcd-lrm-imagereward.yaml",
                            [f"serve.scorers.0.checkpoint={paths['imagereward']}",
                             f"serve.scorers.0.num_cpus={IMAGEREWARD_CPUS}",
                             f"serve.scorers.0.options.med_config={paths['imagereward_med_config']}"]))
        for expert, recipe, extra in recipes:
            name = f"rg-lcm-{expert}-lrm"
            # Each run deploys its expert as its own Serve app: a job's app outlives the job on
            # a shared cluster, so one name (or route) would find the other expert's app running.
            overrides = trainer_overrides(paths, name, steps, out) + extra + placement + [
                f"serve.app_name=rewards-{expert}", f"serve.route_prefix=/rewards-{expert}"]
            seconds[f"train_{expert}"] = run_job(
                f"3-train-{expert}", ["python", "trainer/run.py", "--config", recipe, *overrides],
                head, env, logs)
            run_dir = storage.join(out, name)
            checks[f"train_{expert}"] = check_training(run_dir, logs / f"3-train-{expert}.log")
            runs[name] = run_dir
    return runs


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(rehearse(parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
