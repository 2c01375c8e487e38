"""The three-node rehearsal's object store (orchestration/cluster_rehearsal/object_store.py)
and the fault hook's pause with its marker in that store (trainer/cluster/faults.py), without Ray:
moto's server as its own process, reached through the AWS environment as every node is."""

from __future__ import annotations

import pytest

from orchestration.cluster_rehearsal.object_store import ObjectStore
from rglcd import storage
from trainer.cluster import faults


@pytest.fixture(scope="module")
def store():
    with ObjectStore() as running, pytest.MonkeyPatch.context() as patch:
        for key, value in running.env.items():
            patch.setenv(key, value)
        yield running


def test_uploads_are_read_through_the_aws_environment(store, tmp_path):
    (tmp_path / "model" / "vae").mkdir(parents=True)
    (tmp_path / "model" / "vae" / "config.json").write_text("{}")
    (tmp_path / "prompts.json").write_text("[]")
    folder = store.upload(tmp_path / "model", "inputs/model")
    assert folder == "s3://rehearsal/inputs/model"
    assert storage.read_text(f"{folder}/vae/config.json") == "{}"
    assert storage.read_text(store.upload(tmp_path / "prompts.json", "inputs/p.json")) == "[]"


def test_a_halted_store_keeps_its_objects(store):
    storage.write_text(store.uri("kept.txt"), "kept")
    store.halt()
    store.resume()
    assert store.read_text(store.uri("kept.txt")) == "kept"


def test_the_pause_marks_the_store_once(store, monkeypatch):
    marker = store.uri("signals/pause")
    for name, value in ((faults.FAIL_AT_STEP, "2"), (faults.FAIL_MARKER, marker),
                        (faults.FAIL_MODE, "pause"), (faults.FAIL_PAUSE_S, "0.1")):
        monkeypatch.setenv(name, value)
    faults.maybe_fail(1, 0)
    assert not storage.exists(marker)
    faults.maybe_fail(2, 1)  # another rank: no pause, no marker
    assert not storage.exists(marker)
    faults.maybe_fail(2, 0)
    assert "step 2 on rank 0" in storage.read_text(marker)
    faults.maybe_fail(2, 0)  # the restarted run passes: the marker exists
