"""`rglcd-rehearse` (orchestration/commands/rehearse_real_path.py): the real path end to end
with tiny models, every stage a `ray job submit` to a `ray start --head` node of its own.

data_job -> pretrain_lrm data.latents= -> trainer/run.py with an SD recipe, the LRM and an expert
served by Serve (the VLM judge over HTTP to its own server process; ImageReward with random
weights of its real architecture, in its own environment) -> export -> rglcd-evaluate with
configs/eval/sd15.yaml. It needs ImageReward's environment (orchestration/rehearsal/imagereward_env.py;
`make test` builds it once into .venv-imagereward), so it is marked `imagereward_env`. That
environment is the deployment's: the pins of reward_service/scorers/imagereward-requirements.txt
over this environment's packages, as Ray's runtime_env `pip` and the Docker image build it.
"""

from __future__ import annotations

import pytest

from orchestration.commands.rehearse_real_path import parse_args, rehearse
from orchestration.rehearsal.imagereward_env import imagereward_env

pytestmark = [pytest.mark.imagereward_env, pytest.mark.ray]


def test_every_stage_of_the_real_path_connects(tmp_path_factory):
    python = imagereward_env()
    work = tmp_path_factory.mktemp("rehearsal")
    summary = rehearse(parse_args(["--workdir", str(work), "--imagereward-python", str(python)]))
    checks = summary["checks"]
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
