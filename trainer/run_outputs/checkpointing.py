"""Training checkpoints: atomic save, verified load, Ray Train glue (RNG streams:
``trainer/run_outputs/rng_state.py``).

A checkpoint is one directory (written whole, then renamed into place)::

    step_00000100/
      modules/student/          diffusers folder (config.json + *.safetensors) for ModelMixin
      modules/target/           ... the EMA target, same format
      modules/<extra>.safetensors   any other nn.Module (e.g. the latent reward model)
      modules/<name>.lora.safetensors  a UNet with LoRA adapters (LCM-LoRA student): the
                                adapter weights only; its frozen base is the teacher's
      optimizers/<name>.pt      state_dict() of anything stateful: optimizers, LR schedulers,
                                grad scalers (loaded with ``weights_only=True``: no code runs)
      rng_states.pt             python / numpy / torch / CUDA generator states, one per rank
      train_state.json          step, data position, config snapshot, names of the parts
      manifest.json             written LAST: format version, step, every file's size + sha256

The directory is assembled under a hidden temporary name and renamed into place, so a crash
mid-save leaves no half-written directory under the final name. ``load_checkpoint`` verifies
the manifest before reading anything and raises ``CheckpointError`` for a partial (no
manifest) or corrupt (missing file, wrong size, wrong hash) checkpoint; it never loads one
silently. Ray Train's checkpoint objects are read by ``local_checkpoint_dir`` only (no Ray
import here).
Rotation is Ray Train's: ``CheckpointConfig(num_to_keep=output.keep_checkpoints)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from trainer.lcd.lora import has_lora_adapters, lora_state_dict
from trainer.run_outputs.rng_state import capture_rng_states, restore_rng_states

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TRAIN_STATE_NAME = "train_state.json"
RNG_NAME = "rng_states.pt"
CHECKPOINT_PREFIX = "step_"
_HASH_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint directory is partial, corrupt or does not match the run that loads it."""


@dataclass
class DataPosition:
    """Where the data stream stood when the checkpoint was taken."""

    epoch: int = 0
    batches_consumed: int = 0  # batches consumed within `epoch`


@dataclass
class TrainState:
    """Everything a run needs to continue bit for bit.

    `modules` holds nn.Modules by name ("student", "target"; later "lrm"); diffusers models
    are saved with ``save_pretrained`` (safetensors), others as one safetensors file.
    `stateful` holds objects with ``state_dict()`` / ``load_state_dict()`` by name
    (optimizers, LR schedulers, grad scalers). `rng_states` has one entry per rank (see
    ``gather_rng_states``); when empty at save time, this process's states are captured.
    `config` is a JSON-able snapshot (a pydantic model is dumped with ``model_dump``).
    """

    step: int
    modules: dict[str, nn.Module]
    stateful: dict[str, Any] = field(default_factory=dict)
    data_position: DataPosition = field(default_factory=DataPosition)
    config: Any = None
    rng_states: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------- RNG streams


def rng_states_for_rank(state: TrainState, rank: int) -> dict:
    """The RNG states a given rank should restore; the world size must match the saved one."""
    if not 0 <= rank < len(state.rng_states):
        raise CheckpointError(
            f"The checkpoint holds RNG states for {len(state.rng_states)} rank(s) but rank {rank} "
            "asked for its own: resume with the same number of workers as the saved run, or "
            "start a fresh run."
        )
    return state.rng_states[rank]


# ----------------------------------------------------------------------------- save


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint at `step` (sorts by step)."""
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def _config_snapshot(config: Any) -> Any:
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return config


def _is_diffusers_model(module: nn.Module) -> bool:
    from diffusers import ModelMixin

    return isinstance(module, ModelMixin)


def _unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (works unwrapped too: single-device runs)."""
    if isinstance(module, nn.parallel.DistributedDataParallel):
        return module.module
    return module


def _has_lora(module: nn.Module) -> bool:
    return has_lora_adapters(module)


def _save_modules(modules: dict[str, nn.Module], root: Path) -> dict[str, str]:
    formats = {}
    for name, wrapped in modules.items():
        module = _unwrap(wrapped)
        if _has_lora(module):  # adapters only: the base weights are the frozen teacher's
            from safetensors.torch import save_file

            root.mkdir(parents=True, exist_ok=True)
            weights = {k: v.contiguous() for k, v in lora_state_dict(module).items()}
            save_file(weights, str(root / f"{name}.lora.safetensors"))
            formats[name] = "lora"
        elif _is_diffusers_model(module):
            module.save_pretrained(root / name, safe_serialization=True)
            formats[name] = "diffusers"
        else:
            root.mkdir(parents=True, exist_ok=True)
            save_model(module, str(root / f"{name}.safetensors"))
            formats[name] = "safetensors"
    return formats


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_entries(root: Path) -> list[dict]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    return [
        {"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": _sha256(p)}
        for p in files
    ]


def _write_json(path: Path, payload: Any) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def _write_contents(root: Path, state: TrainState) -> None:
    formats = _save_modules(state.modules, root / "modules")
    (root / "optimizers").mkdir(parents=True, exist_ok=True)
    for name, obj in state.stateful.items():
        torch.save(obj.state_dict(), root / "optimizers" / f"{name}.pt")
    torch.save(state.rng_states or [capture_rng_states()], root / RNG_NAME)
    train_state = {
        "format_version": FORMAT_VERSION,
        "step": state.step,
        "data_position": vars(state.data_position),
        "config": _config_snapshot(state.config),
        "modules": formats,
        "stateful": sorted(state.stateful),
    }
    _write_json(root / TRAIN_STATE_NAME, train_state)
    # The manifest comes last: its presence marks the checkpoint complete.
    manifest = {"format_version": FORMAT_VERSION, "step": state.step, "files": _file_entries(root)}
    _write_json(root / MANIFEST_NAME, manifest)


def save_checkpoint(directory: str | Path, state: TrainState) -> Path:
    """Write `state` to `directory` atomically (temporary sibling + rename); return the path.

    An existing checkpoint at `directory` (e.g. the same step saved again after a resume) is
    replaced only once the new one is complete.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}"
    try:
        _write_contents(tmp, state)
        if directory.exists():
            old = directory.parent / f".old-{directory.name}-{uuid.uuid4().hex[:8]}"
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


# ----------------------------------------------------------------------------- verify + load


def _refuse(directory: Path, problem: str) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint {directory} is unusable: {problem}. It was not loaded. Start a fresh run "
        "with another run_name / output.dir (Ray Train refuses a run directory whose snapshot "
        "names a deleted checkpoint), or restore the checkpoint files from a copy."
    )


def verify_checkpoint(directory: str | Path) -> dict:
    """Check every file against the manifest; return the manifest or raise ``CheckpointError``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise _refuse(directory, "the directory does not exist")
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise _refuse(
            directory, f"{MANIFEST_NAME} is missing, so the save never finished (partial)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _refuse(directory, f"{MANIFEST_NAME} is not valid JSON ({err})") from err
    if manifest.get("format_version") != FORMAT_VERSION:
        raise _refuse(
            directory,
            f"format version {manifest.get('format_version')!r} is not the supported "
            f"{FORMAT_VERSION}",
        )
    for entry in manifest["files"]:
        path = directory / entry["path"]
        if not path.is_file():
            raise _refuse(directory, f"file {entry['path']} listed in the manifest is missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise _refuse(
                directory,
                f"file {entry['path']} has {size} bytes, the manifest says {entry['size']} "
                "(truncated or overwritten)",
            )
        if _sha256(path) != entry["sha256"]:
            raise _refuse(directory, f"file {entry['path']} fails its sha256 check (corrupt)")
    return manifest


def _load_lora_weights(module: nn.Module, path: Path) -> None:
    """Adapter weights into a UNet with the same adapters; any key mismatch is an error."""
    from safetensors.torch import load_file

    weights = load_file(str(path))
    wanted = set(lora_state_dict(module)) if _has_lora(module) else set()
    if set(weights) != wanted:
        diff = sorted(set(weights) ^ wanted)[:3]
        raise CheckpointError(
            f"{path} holds LoRA adapters that do not match this run's (e.g. {diff}): resume "
            "with the model.lora settings that wrote it, or start a fresh run."
        )
    result = module.load_state_dict(weights, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys


def _load_module_weights(module: nn.Module, root: Path, name: str, fmt: str) -> None:
    module = _unwrap(module)
    if fmt == "safetensors":
        load_model(module, str(root / f"{name}.safetensors"), strict=True)
        return
    if fmt == "lora":
        _load_lora_weights(module, root / f"{name}.lora.safetensors")
        return
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for shard in sorted((root / name).glob("*.safetensors")):
        weights.update(load_file(shard))
    module.load_state_dict(weights, strict=True)


def _check_names(directory: Path, kind: str, saved: list[str], wanted: list[str]) -> None:
    if sorted(saved) != sorted(wanted):
        raise CheckpointError(
            f"Checkpoint {directory} holds {kind} {sorted(saved)} but this run expects "
            f"{sorted(wanted)}: resume with the configuration that wrote it, or start a fresh "
            "run in another output directory."
        )


def load_checkpoint(
    directory: str | Path,
    into: TrainState,
    *,
    rank: int = 0,
    restore_rng: bool = True,
    verified: bool = False,
) -> TrainState:
    """Verify `directory`, then load it into the modules / stateful objects of `into`.

    Returns `into` with step, data position, config snapshot and RNG states filled in. With
    `restore_rng`, this rank's RNG streams are put back too (draws continue as after save).
    `verified=True` skips re-hashing a directory the caller has just passed through
    ``verify_checkpoint`` (trainer/cluster/worker.py does, before the models are built).
    Raises ``CheckpointError`` for a partial, corrupt or mismatching checkpoint.
    """
    directory = Path(directory)
    if not verified:
        verify_checkpoint(directory)
    meta = json.loads((directory / TRAIN_STATE_NAME).read_text(encoding="utf-8"))
    _check_names(directory, "modules", list(meta["modules"]), list(into.modules))
    _check_names(directory, "optimizer/scheduler states", meta["stateful"], list(into.stateful))
    for name, module in into.modules.items():
        _load_module_weights(module, directory / "modules", name, meta["modules"][name])
    for name, obj in into.stateful.items():
        saved = torch.load(
            directory / "optimizers" / f"{name}.pt", map_location="cpu", weights_only=True
        )
        obj.load_state_dict(saved)
    into.step = meta["step"]
    into.data_position = DataPosition(**meta["data_position"])
    into.config = meta["config"]
    into.rng_states = torch.load(directory / RNG_NAME, map_location="cpu", weights_only=True)
    if restore_rng:
        restore_rng_states(rng_states_for_rank(into, rank))
    return into


# ----------------------------------------------------------------------------- Ray Train


def local_checkpoint_dir(checkpoint) -> Path | None:
    """The directory of a ``ray.train.Checkpoint`` on a local (or mounted) filesystem; None
    for no checkpoint or remote storage (the loop verifies the downloaded copy there)."""
    if checkpoint is None:
        return None
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return Path(checkpoint.path)
    return None
