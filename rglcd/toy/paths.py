"""Where the committed toy-world artifacts live (built by `rglcd-build-toy-world`)."""

from __future__ import annotations

from pathlib import Path

from rglcd.cache import cache_dir

TOY_ROOT = Path(__file__).resolve().parent
TOY_ARTIFACTS = TOY_ROOT / "artifacts"
TOY_PIPELINE_DIR = TOY_ARTIFACTS / "pipeline"  # diffusers StableDiffusionPipeline folder
TOY_MINICLIP_DIR = TOY_ARTIFACTS / "miniclip"  # transformers CLIPModel + tokenizer
# The mini CLIP with its image tower fine-tuned on hard negatives by stage reward-clip: the
# expert of configs/toy-rglcd-lrm-reward-clip.yaml (docs/reward-clip).
TOY_REWARD_CLIP_DIR = TOY_ARTIFACTS / "miniclip-reward"
TOY_LRM_DIR = TOY_ARTIFACTS / "lrm"  # pretrained latent proxy reward model
# Generated Parquet shards of toy scenes (the build's and LRM pretraining's; a training run
# writes its own under its output root): the user's cache, never the installed package.
TOY_DATA_DIR = cache_dir() / "toy-data"
TOY_REPORT_FILE = TOY_ARTIFACTS / "build_report.json"  # written by the build's verify stage

# The same artifacts as locations for configs: found in each node's own copy of the package
# (rglcd/storage.py), never a driver's absolute path shipped to a worker on another node.
TOY_PIPELINE = "pkg://rglcd.toy/artifacts/pipeline"
TOY_MINICLIP = "pkg://rglcd.toy/artifacts/miniclip"
TOY_REWARD_CLIP = "pkg://rglcd.toy/artifacts/miniclip-reward"
TOY_LRM = "pkg://rglcd.toy/artifacts/lrm"
