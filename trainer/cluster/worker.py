"""Ray Train's entry point for the RG-LCD run; the loop itself is trainer/loop.py.

Kept light on purpose: Ray imports this module in every new worker process, while the loop's
modules pull in diffusers and transformers (seconds of imports) and
then load the teacher, student and target (a minute or more at Stable Diffusion scale). The
checkpoint Ray Train hands a restarted or resumed run is verified against its manifest first,
so a corrupt or partial one is refused before any of that.
"""

from __future__ import annotations


def train_loop_per_worker(loop_config: dict) -> None:
    """Verify the checkpoint to resume from (when it is on a local or mounted filesystem),
    then run the loop. `loop_config["config"]` is the RGLCDConfig as a plain dict."""
    import ray.train

    from trainer.run_outputs.checkpointing import (  # deferred: loads torch
        local_checkpoint_dir,
        verify_checkpoint,
    )

    local = local_checkpoint_dir(ray.train.get_checkpoint())
    if local is not None:
        verify_checkpoint(local)  # raises CheckpointError, which fails the run with its message

    from trainer.loop import run_worker  # deferred: loads torch

    run_worker(loop_config, verified=local is not None)

