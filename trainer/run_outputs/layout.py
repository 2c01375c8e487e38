"""Names inside a run's output directory (`<output.root_dir>/<run_name>/`).

A module of its own so the driver (trainer/run.py's report) can name these folders without
importing the training loop and, with it, diffusers and transformers.
"""

PIPELINE_SUBDIR = "pipeline"  # the exported diffusers pipeline (DiffusionPipeline.from_pretrained)
LORA_SUBDIR = "lora"  # LCM-LoRA runs: pytorch_lora_weights.safetensors (load_lora_weights)
SAMPLES_SUBDIR = "samples"  # PNG grids of 1/2/4-step samples, one per output.sample_every
