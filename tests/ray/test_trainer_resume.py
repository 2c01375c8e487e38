"""Resume and worker-failure recovery of the Ray Train run.

Every run distils the tiny teacher at 16x16, global batch 4, one worker, a checkpoint every
2 steps (tests/helpers/tiny_runs.py). The uninterrupted 4-step run (`baseline`,
tests/ray/conftest.py) is the reference: a run stopped after its step-2 checkpoint and
continued, whose worker is then killed at step 3 and restarted by Ray Train (both in one
rerun), must log exactly the same numbers (CPU, same seed). Whether a run continued from the
checkpoint rather than from scratch is read from Ray Train's own checkpoint list: a run
restarted from scratch would report the step-2 checkpoint a second time. A corrupt checkpoint
is refused by the worker's entry before the loop (tests/unit/test_checkpointing.py) and by
trainer/run.py before Ray starts (tests/e2e/test_trainer_run.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.tiny_runs import (
    CHECKPOINT_EVERY,
    STEPS,
    checkpoints,
    metrics_rows,
    numbers,
)
from tests.helpers.tiny_runs import tiny_run_config as config
from trainer.cluster.faults import FAIL_AT_STEP, FAIL_MARKER
from trainer.run import build_trainer


def test_stopped_run_resumes_and_recovers_from_a_killed_worker(
    ray_cluster, trainer_inputs, baseline, monkeypatch
):
    """Both recoveries in one run (each Ray Train run costs ~1 min of start-up here): a run
    stopped after its step-2 checkpoint is rerun with the same name and continues from it;
    during the rerun its worker is killed at step 3 and Ray Train restarts it from that
    checkpoint. The logged numbers still equal the uninterrupted run's."""
    _, reference = baseline
    first_cfg = config(trainer_inputs, "resume", CHECKPOINT_EVERY)
    first = build_trainer(first_cfg).fit()
    first_rows = metrics_rows(first_cfg)
    [(step, first_checkpoint)] = checkpoints(first)
    assert step == CHECKPOINT_EVERY

    marker = trainer_inputs["root"] / "killed-once.marker"
    monkeypatch.setenv(FAIL_AT_STEP, "3")  # in the rerun: after step 2, before step 3
    monkeypatch.setenv(FAIL_MARKER, str(marker))
    # Same name. Two failures allowed: the injected one, and one spare because Ray Train's
    # placement-group cleaner can, on an overloaded machine, take a live controller for dead
    # and remove the new worker group's placement group ("A worker health check failed").
    # A spare restart resumes from the same checkpoint, so every assertion below still holds.
    cfg = config(trainer_inputs, "resume", STEPS, "scaling.max_failures=2")
    result = build_trainer(cfg).fit()
    rows = metrics_rows(cfg)

    assert marker.is_file(), "the injected failure never fired"
    assert result.error is None
    # Ray Train kept the first run's step-2 checkpoint, restarted the killed worker from it
    # (a restart from scratch would report step 2 again) and got only step 4 afterwards;
    # steps 0-1 in metrics.jsonl are the first run's lines (timings included), untouched.
    assert checkpoints(result) == [
        (CHECKPOINT_EVERY, first_checkpoint),
        (STEPS, result.checkpoint.path),
    ]
    assert rows[:CHECKPOINT_EVERY] == first_rows
    assert [r["step"] for r in rows] == list(range(STEPS))  # step 2's first line replaced
    assert numbers(rows) == numbers(reference)  # bit for bit on CPU
    assert rows[-1]["loss"] != rows[0]["loss"]
    assert (Path(cfg.output_dir) / "pipeline" / "model_index.json").is_file()


def test_fault_hook_is_inert_by_default_and_fires_once(tmp_path, monkeypatch):
    """The injection hook itself (no Ray): nothing unless asked, then once per marker."""
    from trainer.cluster.faults import FAIL_MODE, InjectedFault, maybe_fail, worker_env

    for name in (FAIL_AT_STEP, FAIL_MARKER, FAIL_MODE):
        monkeypatch.delenv(name, raising=False)
    for step in range(5):
        maybe_fail(step, rank=0)
    assert worker_env() == {}

    marker = tmp_path / "marker"
    monkeypatch.setenv(FAIL_AT_STEP, "2")
    monkeypatch.setenv(FAIL_MARKER, str(marker))
    monkeypatch.setenv(FAIL_MODE, "raise")
    assert worker_env()["env_vars"][FAIL_AT_STEP] == "2"
    maybe_fail(1, rank=0)
    maybe_fail(2, rank=1)  # another rank
    assert not marker.exists()
    with pytest.raises(InjectedFault, match="step 2 on rank 0"):
        maybe_fail(2, rank=0)
    assert marker.is_file()
    maybe_fail(2, rank=0)  # the restarted worker runs through

    monkeypatch.delenv(FAIL_MARKER)
    with pytest.raises(ValueError, match=FAIL_MARKER):
        maybe_fail(2, rank=0)
