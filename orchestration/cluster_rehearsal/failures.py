"""Failure cases of the three-node rehearsal, on its cluster (after its stages).

Node loss: plain LCD with two training workers, one on each worker node, checkpointing to the
object store at every step, runs twice: once through, once with rank 0 paused at step
PAUSE_STEP (trainer/cluster/faults.py, mode "pause") while node_a's raylet is killed. A replacement
node (node_c, with the same `train_slot`) joins as an autoscaler would start one; Ray Train
restarts the worker group (scaling.max_failures=1), which resumes from the newest checkpoint
in the store. Each sample's noise and solver step are drawn from (seed, step, sample), so the
resumed run's losses must equal the uninterrupted run's.

Store outage: the same run with the object store's process stopped while it saves a
checkpoint, then let go on (`store_outage`).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestration.cluster_rehearsal.cluster import LocalCluster
from orchestration.cluster_rehearsal.object_store import ObjectStore
from orchestration.cluster_rehearsal.rehearsal import TRAIN_SLOT, TRAINER_PLACEMENT, WORKER_CPUS
from orchestration.local_head import run_job
from rglcd import storage

STEPS = 4
PAUSE_STEP = 2
# Same numbers on any rerun of the same code on the same machine; a margin for DDP's reduce.
LOSS_TOLERANCE = 1e-5


def lcd_overrides(paths: dict, root: str, name: str) -> list[str]:
    return [
        f"model.teacher={paths['sd']}", "model.resolution=32", "model.mixed_precision=no",
        f"data.train_path={paths['latents']}", f"lcd.max_steps={STEPS}",
        "lcd.global_batch_size=4", "scaling.use_gpu=false", "scaling.max_failures=1",
        f"output.root_dir={root}", f"run_name={name}", "output.log_every=1",
        "output.checkpoint_every=1", "output.sample_every=0", *TRAINER_PLACEMENT,
    ]


def wait_until(ready, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(1.0)


def newest_checkpoint_step(run_dir: str) -> int | None:
    steps = [json.loads(storage.read_text(m))["step"]
             for m in storage.list_files(run_dir, "manifest.json", recursive=True)
             if "/checkpoint_" in m]
    return max(steps, default=None)


def losses(run_dir: str) -> dict[int, float]:
    text = storage.read_text(storage.join(run_dir, "metrics.jsonl"))
    rows = [json.loads(line) for line in text.splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def node_loss(store: ObjectStore, cluster: LocalCluster, paths: dict, env: dict,
              logs: Path) -> dict:
    """The uninterrupted run, then the run that loses node_a at PAUSE_STEP; both compared."""
    root, command = store.uri("failures"), ["python", "trainer/run.py", "--config",
                                            "configs/sd15-lcd.yaml"]
    seconds = {"lcd_uninterrupted": run_job(
        "6-lcd-uninterrupted", command + lcd_overrides(paths, root, "lcd-uninterrupted"),
        cluster.url, env, logs)}
    marker = store.uri("signals/node-loss")
    fault_env = env | {"RGLCD_FAIL_AT_STEP": str(PAUSE_STEP), "RGLCD_FAIL_MARKER": marker,
                       "RGLCD_FAIL_MODE": "pause"}
    run_dir = storage.join(root, "lcd-node-loss")
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(run_job, "7-lcd-node-loss",
                          command + lcd_overrides(paths, root, "lcd-node-loss"),
                          cluster.url, fault_env, logs)
        wait_until(lambda: job.done() or storage.exists(marker), 400, "the pause at step 2")
        if job.done():
            job.result()  # raises: the run failed before the pause
            raise RuntimeError("the node-loss run finished without pausing")
        resumed_from = newest_checkpoint_step(run_dir)
        cluster.kill_raylet("node_a")
        cluster.add_worker("node_c", WORKER_CPUS, {TRAIN_SLOT: 1})
        job.result()
    seconds["lcd_node_loss"] = time.perf_counter() - start
    through, resumed = losses(storage.join(root, "lcd-uninterrupted")), losses(run_dir)
    equal = through.keys() == resumed.keys() and all(
        abs(through[s] - resumed[s]) <= LOSS_TOLERANCE * max(1.0, abs(through[s]))
        for s in through)
    return {"resumed_from_checkpoint_step": resumed_from, "killed": "node_a",
            "replacement": "node_c", "uninterrupted_loss": through,
            "after_node_loss_loss": resumed, "equal": equal, "seconds": seconds}


def local_output_refused(cluster: LocalCluster, paths: dict, env: dict, logs: Path) -> str:
    """The negative control: the same LCD run with a local output folder must fail on nodes
    that share no disk. Returns the lines of the failure that say why."""
    command = ["python", "trainer/run.py", "--config", "configs/sd15-lcd.yaml"]
    overrides = lcd_overrides(paths, "/tmp/rglcd-local-outputs", "lcd-local-output")
    try:
        run_job("6-local-output", command + overrides, cluster.url, env, logs)
    except RuntimeError:
        lines = [x.strip() for x in (logs / "6-local-output.log").read_text().splitlines()]
        said = [x for x in lines if x.startswith("error:")]  # trainer/run.py's own refusal
        why = said or [x for x in lines if "Error" in x or "storage" in x.lower()]
        return "\n".join(why[-4:])
    raise RuntimeError("a run with a local output folder succeeded on worker nodes that "
                       "should share no disk: the isolation does not hold")


OUTAGE_S = 30.0


def store_outage(store: ObjectStore, cluster: LocalCluster, paths: dict, env: dict,
                 logs: Path) -> dict:
    """The store stops answering for OUTAGE_S while the run saves its step-PAUSE_STEP
    checkpoint, then comes back. The run must either finish (the save retried, or the worker
    group restarted from the last complete checkpoint) or stop with a message naming the
    s3:// location it could not write; no checkpoint without a complete manifest is loaded."""
    root, name = store.uri("failures"), "lcd-store-outage"
    marker = store.uri("signals/store-outage")
    fault_env = env | {"RGLCD_FAIL_AT_STEP": str(PAUSE_STEP), "RGLCD_FAIL_MARKER": marker,
                       "RGLCD_FAIL_MODE": "pause", "RGLCD_FAIL_PAUSE_S": "5"}
    command = ["python", "trainer/run.py", "--config", "configs/sd15-lcd.yaml"]
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(run_job, "8-lcd-store-outage", command + lcd_overrides(paths, root, name),
                          cluster.url, fault_env, logs)
        wait_until(lambda: job.done() or storage.exists(marker), 400, "the pause at step 2")
        store.halt()
        try:
            time.sleep(OUTAGE_S)
        finally:
            store.resume()
        try:
            job.result()
            outcome, message = "finished", ""
        except RuntimeError as err:
            outcome = "stopped"
            message = next((x.strip() for x in reversed(str(err).splitlines()) if "s3://" in x), "")
            if not message:
                raise RuntimeError(f"the run stopped without naming the location: {err}") from err
    run_dir = storage.join(root, name)
    return {"outcome": outcome, "message": message,
            "losses": losses(run_dir) if outcome == "finished" else {},
            "complete_checkpoints": newest_checkpoint_step(run_dir),
            "seconds": {"store_outage": time.perf_counter() - start}}
