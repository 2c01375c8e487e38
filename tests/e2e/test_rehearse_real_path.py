"""`rglcd-rehearse --nodes 3 --failures` (orchestration/commands/rehearse_real_path.py): the real
path end to end with tiny models on a head and two worker nodes that share no disk, every
location in a loopback object store, then the failure cases on the same cluster.

data_job -> pretrain_lrm data.latents= -> trainer/run.py with an SD recipe, the LRM and an expert
served by Serve (the VLM judge over HTTP to its own server process; ImageReward with random
weights of its real architecture, in its own environment) -> export -> rglcd-evaluate with
configs/eval/sd15.yaml, each a `ray job submit` with s3:// paths only. Before the stages a probe
job shows that a file one worker node writes is invisible to the other; after them a run with
a local output folder must fail (the negative control), a run that loses a worker node
mid-training resumes from its checkpoint in the store on a replacement node with the losses of
an uninterrupted run, a run whose object store stops answering while it saves a checkpoint
finishes with those losses too (or stops naming the location), and the default toy recipe
runs with its reward service on a node of its own, which is lost mid-run. The worker nodes live in mount namespaces of their own (`unshare -m`), so
the test needs root. It needs ImageReward's environment (orchestration/rehearsal/imagereward_env.py;
`make test` builds it once into .venv-imagereward), so it is marked `imagereward_env`.
"""

from __future__ import annotations

import os
import shutil

import pytest

from orchestration.cluster_rehearsal.failures import LOSS_TOLERANCE, PAUSE_STEP
from orchestration.commands.rehearse_real_path import parse_args, rehearse
from orchestration.rehearsal.imagereward_env import imagereward_env

# The default recipe's run on the cluster: enough steps for LRM updates from the toy judge.
TOY_STEPS = 40

pytestmark = [pytest.mark.imagereward_env, pytest.mark.ray, pytest.mark.cluster_rehearsal]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="worker nodes without a shared disk need root and unshare(1)")
def test_the_real_path_on_three_nodes_that_share_no_disk(tmp_path_factory):
    python = imagereward_env()
    work = tmp_path_factory.mktemp("rehearsal")
    summary = rehearse(parse_args(["--workdir", str(work), "--imagereward-python", str(python),
                                   "--nodes", "3", "--failures",
                                   "--toy-steps", str(TOY_STEPS)]))
    checks = summary["checks"]
    # The worker nodes share no disk: only the object store carries a file between them.
    isolation = checks["isolation"]
    assert isolation["writer"] != isolation["reader"]
    assert isolation["seen"] == {"tmp": False, "outputs": False, "object_store": True}
    # (refused before any training worker started: the nodes that cannot see the folder named)
    assert "cannot see" in checks["local_output_refused"], checks["local_output_refused"]
    # ImageReward imports and scores in its own environment, same torch as the core; the
    # package's PIL path and the scorer's tensor path agree on a 224 px image.
    env = checks["imagereward_env"]
    assert env["transformers"] == "4.46.3"
    assert env["torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]
    assert env["scorer_score"] == pytest.approx(env["package_score"], abs=1e-4)
    assert checks["data_job"] == 48
    assert 0.0 <= checks["pretrain_lrm"]["heldout_top1"] <= checks["pretrain_lrm"]["heldout_top5"]
    for expert in ("vlm-judge", "imagereward"):  # LRM updates from each expert's scores
        train = checks[f"train_{expert}"]
        assert train["lrm_updates"] >= 1 and train["pipeline"] == "LatentConsistencyModelPipeline"
        assert train["steps"] == [0, 1, 2]
    rows = set(checks["evaluate"]["rows"])
    assert {"teacher@4", "rg-lcm-vlm-judge-lrm@2", "rg-lcm-imagereward-lrm@4"} <= rows
    assert set(checks["evaluate"]["scorers"]) == {"hpsv2.1", "pickscore", "clipscore", "imagereward"}
    # Losing node_a at step PAUSE_STEP: resumed from the store's newest checkpoint on node_c,
    # and every step's loss equals the uninterrupted run's.
    node_loss = checks["failures"]["node_loss"]
    # (a checkpoint's step counts the steps it holds: PAUSE_STEP steps done before the pause)
    assert node_loss["resumed_from_checkpoint_step"] == PAUSE_STEP
    assert node_loss["equal"], node_loss
    # The store stopped answering while a checkpoint was saved: the run either finished with
    # the uninterrupted run's losses (the save retried, or resumed from the last complete
    # checkpoint) or stopped with a message naming the s3:// location.
    outage = checks["failures"]["store_outage"]
    if outage["outcome"] == "finished":
        through = node_loss["uninterrupted_loss"]
        assert outage["losses"].keys() == through.keys(), outage
        assert all(outage["losses"][s] == pytest.approx(through[s], rel=LOSS_TOLERANCE)
                   for s in through), outage
    else:
        assert outage["outcome"] == "stopped" and "s3://" in outage["message"], outage
    # The default recipe (RG-LCD + LRM, the toy judge as expert): driver on the head, workers
    # on the worker nodes, the reward service on a node of its own, which is killed at a step;
    # Serve restarts the replicas on a replacement node, the skipped updates are counted and
    # LRM updates resume; everything the run writes is in the store.
    toy = checks["toy_default"]
    assert toy["run"].startswith("s3://") and toy["report"], toy
    assert toy["last_step"] == TOY_STEPS - 1, toy
    assert toy["skipped"] >= 1 and toy["lrm_updates_after_loss"] >= 1, toy
