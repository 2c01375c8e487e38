"""Fixtures of the Ray-tier trainer tests: one tiny teacher with latent shards, and one
uninterrupted plain-LCD run that the resume, worker-failure and DDP tests compare against
(one run instead of one per module: each Ray Train run costs about a minute of start-up on
two cores)."""

from __future__ import annotations

import pytest

from rglcd.tiny_models import save_tiny_sd_pipeline
from tests.helpers import toy_latent_shards
from tests.helpers.tiny_runs import STEPS, checkpoints, metrics_rows, tiny_run_config


@pytest.fixture(scope="session")
def trainer_inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("trainer-tiny")
    teacher = save_tiny_sd_pipeline(root / "teacher")
    return {"root": root, "teacher": teacher, "data": toy_latent_shards(root / "data", teacher, 24)}


@pytest.fixture(scope="session")
def baseline(ray_cluster, trainer_inputs):
    """(config, metrics rows) of the uninterrupted STEPS-step run (checkpoints at 2 and 4)."""
    from trainer.run import build_trainer

    cfg = tiny_run_config(trainer_inputs, "baseline")
    result = build_trainer(cfg).fit()
    rows = metrics_rows(cfg)
    assert [r["step"] for r in rows] == list(range(STEPS))
    assert [step for step, _ in checkpoints(result)] == [2, 4]
    return cfg, rows


@pytest.fixture(scope="session")
def scorer_app(serve_http_port, tmp_path_factory):
    """The scorer test app (tests/helpers/scorers.py) deployed once: yields its ServeConfig."""
    from ray import serve

    from reward_service.app import build_app
    from tests.helpers import scorers

    vae_dir = str(save_tiny_sd_pipeline(tmp_path_factory.mktemp("scorer-app-vae")))
    config = scorers.scorer_test_config(vae_dir)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(scorers.TOKEN_ENV, scorers.TOKEN)  # read by build_app, here in the driver
        serve.run(build_app(config, scorers.make_scorer), name=config.app_name,
                  route_prefix=config.route_prefix)
    yield config
    serve.delete(config.app_name)
