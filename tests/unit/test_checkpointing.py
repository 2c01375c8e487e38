"""Checkpoint round trip and refusal of partial / corrupt checkpoints."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from rglcd.tiny_models import tiny_unet
from trainer.run_outputs.checkpointing import (
    MANIFEST_NAME,
    CheckpointError,
    DataPosition,
    TrainState,
    checkpoint_name,
    load_checkpoint,
    local_checkpoint_dir,
    save_checkpoint,
    verify_checkpoint,
)


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.randn(3).tolist()


def _fresh_state(seed: int) -> TrainState:
    student = tiny_unet(seed=seed, time_cond_proj_dim=8)
    target = tiny_unet(seed=seed + 1, time_cond_proj_dim=8)
    extra = nn.Linear(4, 2)  # stands in for a non-diffusers module such as the LRM
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    extra_opt = torch.optim.AdamW(extra.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    return TrainState(
        step=0,
        modules={"student": student, "target": target, "lrm": extra},
        stateful={"student_opt": opt, "lrm_opt": extra_opt, "student_lr": sched},
    )


def _train_a_little(state: TrainState) -> None:
    student, extra = state.modules["student"], state.modules["lrm"]
    for _ in range(2):
        out = student(
            torch.randn(1, 4, 8, 8), 10, torch.randn(1, 3, 32), timestep_cond=torch.randn(1, 8)
        ).sample
        (out.square().mean() + extra(torch.randn(2, 4)).square().mean()).backward()
        for name in ("student_opt", "lrm_opt", "student_lr"):
            state.stateful[name].step()
        state.stateful["student_opt"].zero_grad()
        state.stateful["lrm_opt"].zero_grad()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained state saved once, plus the draws that follow the save."""
    torch.manual_seed(0)
    state = _fresh_state(seed=0)
    _train_a_little(state)
    state.step = 2
    state.data_position = DataPosition(epoch=1, batches_consumed=7)
    state.config = {"lr": 1e-3, "beta": 5.0}
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / checkpoint_name(2), state)
    return state, path, _draws()


def test_round_trip_restores_weights_optimizers_step_and_rng(saved, tmp_path):
    state, path, draws_after_save = saved
    _draws()  # move every stream on, so a restore has something to undo
    restored = load_checkpoint(path, _fresh_state(seed=42))

    assert _draws() == draws_after_save
    assert restored.step == 2
    assert restored.data_position == DataPosition(epoch=1, batches_consumed=7)
    assert restored.config == {"lr": 1e-3, "beta": 5.0}
    for name, module in state.modules.items():
        for (key, a), b in zip(
            module.state_dict().items(), restored.modules[name].state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), f"{name}.{key} differs after restore"
    for name in ("student_opt", "lrm_opt"):
        original = state.stateful[name].state_dict()
        loaded = restored.stateful[name].state_dict()
        assert original["param_groups"] == loaded["param_groups"]
        for pid, slots in original["state"].items():
            for slot, value in slots.items():
                assert torch.equal(value, loaded["state"][pid][slot]), f"{name} {pid}.{slot}"
    assert restored.stateful["student_lr"].state_dict()["last_epoch"] == 2


def test_continued_training_matches_after_restore(saved):
    """One more optimiser step from the restored state equals one from the saved state."""
    state, path, _ = saved
    restored = load_checkpoint(path, _fresh_state(seed=7), restore_rng=False)
    outputs = []
    for candidate in (state, restored):
        torch.manual_seed(11)
        _train_a_little(candidate)
        outputs.append(candidate.modules["student"].conv_out.weight.detach().clone())
    assert torch.equal(outputs[0], outputs[1])


def _corrupt_copy(path, tmp_path, damage):
    copy = tmp_path / path.name
    shutil.copytree(path, copy)
    damage(copy)
    return copy


def _weights_file(root):
    return root / "modules" / "student" / "diffusion_pytorch_model.safetensors"


def _truncate(root):
    data = _weights_file(root).read_bytes()
    _weights_file(root).write_bytes(data[: len(data) // 2])


def _flip_byte(root):
    data = bytearray(_weights_file(root).read_bytes())
    data[len(data) // 2] ^= 0xFF
    _weights_file(root).write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_truncate, r"diffusion_pytorch_model\.safetensors has \d+ bytes"),
        (_flip_byte, r"diffusion_pytorch_model\.safetensors fails its sha256"),
        (lambda root: (root / MANIFEST_NAME).unlink(), r"manifest\.json is missing.*partial"),
        (lambda root: (root / "optimizers" / "lrm_opt.pt").unlink(), r"lrm_opt\.pt .* is missing"),
    ],
    ids=["truncated", "flipped-byte", "no-manifest", "missing-file"],
)
def test_damaged_checkpoint_is_refused(saved, tmp_path, damage, expected):
    _, path, _ = saved
    broken = _corrupt_copy(path, tmp_path, damage)
    victim = _fresh_state(seed=5)
    before = victim.modules["student"].conv_out.weight.clone()
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(broken, victim)
    assert "Start a fresh run with another run_name" in str(info.value)
    assert torch.equal(victim.modules["student"].conv_out.weight, before), "loaded partially"


def test_mismatching_parts_are_refused(saved):
    _, path, _ = saved
    state = _fresh_state(seed=0)
    del state.stateful["lrm_opt"]
    with pytest.raises(CheckpointError, match="lrm_opt"):
        load_checkpoint(path, state)


def test_manifest_lists_every_file_and_save_leaves_no_temp_dirs(saved):
    _, path, _ = saved
    manifest = verify_checkpoint(path)
    listed = {entry["path"] for entry in manifest["files"]}
    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert on_disk - listed == {MANIFEST_NAME}
    assert manifest["step"] == 2
    assert json.loads((path / "train_state.json").read_text())["modules"]["lrm"] == "safetensors"
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_saving_the_same_step_again_replaces_it(tmp_path):
    small = TrainState(step=3, modules={"lrm": nn.Linear(2, 2)})
    path = save_checkpoint(tmp_path / checkpoint_name(3), small)
    with torch.no_grad():
        small.modules["lrm"].weight.fill_(0.5)
    save_checkpoint(path, small)
    fresh = TrainState(step=0, modules={"lrm": nn.Linear(2, 2)})
    load_checkpoint(path, fresh, restore_rng=False)
    assert torch.all(fresh.modules["lrm"].weight == 0.5)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_worker_entry_verifies_local_checkpoints_only(saved, tmp_path):
    """trainer/cluster/worker.py checks a local checkpoint before the models exist; the loop then
    loads with verified=True (no second hash). Remote storage is left to the loop."""
    import pyarrow.fs
    from ray.train import Checkpoint

    _, path, _ = saved
    assert local_checkpoint_dir(None) is None
    assert local_checkpoint_dir(Checkpoint.from_directory(str(path))) == path
    subtree = pyarrow.fs.SubTreeFileSystem("/", pyarrow.fs.LocalFileSystem())
    remote = Checkpoint(str(path), filesystem=subtree)  # stands for s3:// and the like
    assert local_checkpoint_dir(remote) is None

    broken = _corrupt_copy(path, tmp_path, _flip_byte)
    with pytest.raises(CheckpointError, match="fails its sha256"):
        verify_checkpoint(broken)
    load_checkpoint(broken, _fresh_state(seed=5), verified=True)  # the caller's promise


def test_worker_entry_refuses_a_corrupt_checkpoint_before_the_loop(saved, tmp_path, monkeypatch):
    """What Ray Train hands a restarted or resumed worker goes through train_loop_per_worker:
    a damaged checkpoint raises CheckpointError (Ray Train fails the run with that message)
    before the loop reads its config or builds a model."""
    import ray.train

    from trainer.cluster.worker import train_loop_per_worker

    _, path, _ = saved
    broken = _corrupt_copy(path, tmp_path, _flip_byte)
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: ray.train.Checkpoint(str(broken)))
    with pytest.raises(CheckpointError, match="fails its sha256 check") as info:
        train_loop_per_worker({})  # no config at all: the check must come first
    assert "It was not loaded" in str(info.value)
