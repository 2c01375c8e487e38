"""trainer/run.py's logical-CPU arithmetic for attaching to an existing cluster."""

from __future__ import annotations

from trainer.cluster.ray_connect import logical_cpus_needed, warn_if_too_few_cpus
from trainer.config import load_trainer_config


def test_default_recipe_reserves_workers_encoder_reads_and_service():
    default = load_trainer_config("toy-rglcd-lrm-toy-judge", [])
    plain = load_trainer_config("toy-lcd", [])
    assert logical_cpus_needed(plain) == 1 + 1 + 2  # worker, encoder actor, read tasks
    service = 0.25 + sum(s.num_cpus for s in default.serve.scorers)
    service += sum(v.num_cpus for v in default.serve.vaes.values())
    assert logical_cpus_needed(default) == 4 + service


def test_too_small_cluster_gets_a_warning_that_says_what_to_start(capsys):
    warn_if_too_few_cpus(2.0, 5.75)
    err = capsys.readouterr().err
    assert "has 2 logical CPUs but this run reserves 5.75" in err
    assert "ray start --head --num-cpus=6" in err
    warn_if_too_few_cpus(8.0, 5.75)
    assert capsys.readouterr().err == ""
