"""Inside ImageReward's isolated environment: the package's own scores, for the core scorer.

    PYTHONPATH=. <env>/bin/python tests/helpers/imagereward_parity.py WORK_DIR   # one JSON line

Builds the package's `ImageReward` (ViT-L/16 + BERT + MLP, real sizes) with random weights,
its MLP re-drawn with unit-gain weights (the package's own init, std 1/769 over five linear
layers, gives about the same score to every image, which would hide a wrong image path),
saves ImageReward.pt, med_config.json and an offline bert-base-uncased tokenizer under
WORK_DIR, and scores `IMAGES` seeded 224 px images with the package's PIL `score()`.
tests/e2e/test_imagereward_native.py loads the same files with the core-environment scorer.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

IMAGES = 3
SIZE = 224


def seeded_pixels(index: int):
    """(224, 224, 3) uint8 image number `index` (the same in both environments)."""
    import numpy as np

    return np.random.default_rng(index).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def main(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    os.environ["HF_HOME"] = str(work / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from orchestration.rehearsal.imagereward_check import PROMPT, offline_bert_tokenizer

    offline_bert_tokenizer(work / "hf")
    import torch
    from ImageReward.ImageReward import ImageReward
    from PIL import Image

    from orchestration.rehearsal.imagereward_check import MED_CONFIG

    med_config = work / "med_config.json"
    med_config.write_text(json.dumps(MED_CONFIG))
    torch.manual_seed(0)
    model = ImageReward(med_config=str(med_config), device="cpu").eval()
    with torch.no_grad():
        for layer in model.mlp.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0, layer.in_features ** -0.5)
    torch.save(model.state_dict(), work / "ImageReward.pt")
    with torch.no_grad():
        scores = [model.score(PROMPT, Image.fromarray(seeded_pixels(i))) for i in range(IMAGES)]
    return {"prompt": PROMPT, "package_scores": [float(s) for s in scores]}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
