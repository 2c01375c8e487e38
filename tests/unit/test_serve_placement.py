"""Pinning reward-service replicas to nodes: custom resources and node labels in the config
become Serve's ray_actor_options, in the form Serve's own schema accepts."""

from __future__ import annotations

import pytest
from ray.serve.schema import RayActorOptionsSchema

from reward_service.config import ServeConfig
from trainer.config import load_trainer_config


def test_default_replicas_go_anywhere_with_room():
    serve = ServeConfig()
    options = serve.scorers[0].actor_options(0.5, 0.0)
    assert options == {"num_cpus": 0.5, "num_gpus": 0.0}


def test_resources_and_labels_reach_the_actor_options():
    cfg = load_trainer_config(None, [
        "serve.scorers.0.resources={reward_node: 0.5}",
        "serve.vaes.toy.label_selector={ray.io/node-group: reward-gpu}",
        "scaling.resources={train_node: 1}",
    ], check_paths=False)
    scorer = cfg.serve.scorers[0].actor_options(1.0, 0.5)
    vae = cfg.serve.vaes["toy"].actor_options(0.5, 0.5)
    assert scorer["resources"] == {"reward_node": 0.5}
    assert vae["label_selector"] == {"ray.io/node-group": "reward-gpu"}
    assert cfg.scaling.resources == {"train_node": 1.0}
    for options in (scorer, vae):
        RayActorOptionsSchema.model_validate(options)  # what `serve deploy` would check


def test_a_bad_label_is_refused_by_serve():
    cfg = load_trainer_config(None, ["serve.scorers.0.label_selector={'bad key!': x}"],
                              check_paths=False)
    with pytest.raises(ValueError):
        RayActorOptionsSchema.model_validate(cfg.serve.scorers[0].actor_options(1, 0))
