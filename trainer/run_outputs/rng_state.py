"""RNG streams of a training process: capture, restore, gather across DDP ranks.

Saved in every checkpoint (``trainer/run_outputs/checkpointing.py``) so that a resumed run draws
the same noise, timesteps and guidance scales as an uninterrupted one (identical losses on CPU).
"""

from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng_states() -> dict:
    """This process's generator states: python, numpy, torch CPU, torch CUDA (all devices)."""
    bit_generator, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": bit_generator,
            "keys": torch.from_numpy(keys.astype(np.int64)),  # uint32 fits losslessly
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict) -> None:
    """Put back the generator states captured by ``capture_rng_states``."""
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = states["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def gather_rng_states() -> list[dict]:
    """One ``capture_rng_states()`` per rank, in rank order (collective under torch.distributed).

    Every rank must call this when a process group is initialised; only rank 0 then writes.
    """
    local = capture_rng_states()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [local]
    gathered: list[dict | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, local)
    return gathered  # type: ignore[return-value]
