"""Building blocks of the latent pre-encoding job (orchestration/commands/data_job.py)."""
