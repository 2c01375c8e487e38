"""The product's commands: toy-world rebuild, data job, LRM pretraining, evaluation, reward
probe, GPU check and the rehearsal of the real path. Each runs as `python -m
orchestration.commands.<name>` and as its `rglcd-*` entry point (pyproject.toml)."""
