"""What a run writes under `<output.root_dir>/<run_name>/`, and reads back on resume.

Checkpoints (checkpointing.py, with each rank's RNG streams from rng_state.py), per-step
metrics (monitoring.py: metrics.jsonl, dashboard metrics, the driver's progress line), the
sample grids (sample_grid.py), the exported diffusers pipeline or LoRA adapters (export.py),
and the run's report.md with its curves (report.py, curves.py); layout.py names the folders,
so the driver can point at them without importing the training loop. (Not `outputs/`: that is
the name of the run folders themselves, which git ignores and Ray's job uploads leave out.)
"""
