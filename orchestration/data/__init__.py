"""Building blocks of the latent pre-encoding job (orchestration/data_job.py)."""
