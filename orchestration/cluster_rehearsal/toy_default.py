"""The default recipe on the three-node cluster, and the loss of the node that hosts its expert.

`python trainer/run.py` (RG-LCD + LRM, the toy judge as expert) runs as a Ray job: its driver
on the head, its two training workers on the `train_slot` nodes, the reward service's replicas
(the toy judge and the toy VAE decoder) on a node of their own (`expert_host`), every output
and the toy world's generated data set in the object store.

With `lose_expert_host`, rank 0 pauses briefly at EXPERT_LOSS_STEP (trainer/cluster/faults.py) and the
expert's node is killed there; a replacement `expert_host` node joins REPLACEMENT_AFTER_S
later, as an autoscaler would start one. Serve restarts the replicas on it. Meanwhile the
training workers go on: the requests that found no replica are dropped once they leave the
window and counted in `reward_updates_skipped`, and LRM updates resume once the replicas are
back. The window is fixed at `lrm.max_staleness_steps` for this case (no adaptive widening),
so an outage of more than that many steps must show up as skipped updates.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestration.cluster_rehearsal.cluster import LocalCluster
from orchestration.cluster_rehearsal.failures import wait_until
from orchestration.cluster_rehearsal.object_store import ObjectStore
from orchestration.cluster_rehearsal.rehearsal import TRAINER_PLACEMENT, WORKER_CPUS
from orchestration.local_head import free_port, run_job
from rglcd import storage
from trainer.cluster.faults import FAIL_AT_STEP, FAIL_MARKER, FAIL_MODE, FAIL_PAUSE_S

EXPERT_HOST = "expert_host"
EXPERT_LOSS_STEP = 6
REPLACEMENT_AFTER_S = 15.0


def overrides(root: str, steps: int, lose_expert_host: bool) -> list[str]:
    # Two workers share the default global batch of 16: the LRM subset fits one worker's 8.
    found = [f"output.root_dir={root}", f"lcd.max_steps={steps}", "output.log_every=1",
             "lrm.batch_size=8",
             f"serve.port={free_port()}", *TRAINER_PLACEMENT,
             f"serve.scorers.0.resources={{{EXPERT_HOST}: 0.01}}",
             f"serve.vaes.toy.resources={{{EXPERT_HOST}: 0.01}}"]
    if lose_expert_host:
        found.append("lrm.max_adaptive_staleness_steps=0")
    return found


def run(store: ObjectStore, cluster: LocalCluster, env: dict, logs: Path, steps: int,
        lose_expert_host: bool) -> dict:
    """The toy default run (see the module doc); returns what its metrics.jsonl shows."""
    cluster.add_worker("expert_a", WORKER_CPUS, {EXPERT_HOST: 1})
    root = store.uri("toy")
    command = ["python", "trainer/run.py", *overrides(root, steps, lose_expert_host)]
    start = time.perf_counter()
    if not lose_expert_host:
        run_job("9-toy-default", command, cluster.url, env, logs)
    else:
        marker = store.uri("signals/expert-host-loss")
        fault_env = env | {FAIL_AT_STEP: str(EXPERT_LOSS_STEP), FAIL_MARKER: marker,
                           FAIL_MODE: "pause", FAIL_PAUSE_S: "2"}
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(run_job, "9-toy-default", command, cluster.url, fault_env, logs)
            wait_until(lambda: job.done() or storage.exists(marker), 600,
                       f"the pause at step {EXPERT_LOSS_STEP}")
            if job.done():
                job.result()  # raises: the run failed before the pause
                raise RuntimeError("the toy run finished without pausing")
            cluster.kill_raylet("expert_a")
            time.sleep(REPLACEMENT_AFTER_S)
            cluster.add_worker("expert_b", WORKER_CPUS, {EXPERT_HOST: 1})
            job.result()
    run_dir = storage.join(root, "toy-rglcd")
    found = summary(run_dir)
    return found | {"seconds": time.perf_counter() - start, "run": run_dir,
                    "expert_host_lost_at_step": EXPERT_LOSS_STEP if lose_expert_host else None}


def summary(run_dir: str) -> dict:
    rows = [json.loads(x) for x in storage.read_text(
        storage.join(run_dir, "metrics.jsonl")).splitlines()]
    steps = [r for r in rows if "step" in r and "loss" in r]
    after = [r for r in steps if r["step"] > EXPERT_LOSS_STEP]
    return {"steps": len(steps), "last_step": steps[-1]["step"] if steps else None,
            "lrm_updates": sum(r.get("lrm_updates", 0) for r in steps),
            "lrm_updates_after_loss": sum(r.get("lrm_updates", 0) for r in after),
            "skipped": sum(r.get("reward_updates_skipped", 0) for r in steps),
            "report": storage.exists(storage.join(run_dir, "report.md"))}
