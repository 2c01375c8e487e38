"""Inside ImageReward's isolated environment: import the package, score one image two ways.

    PYTHONPATH=<packages root> <env>/bin/python -m orchestration.rehearsal.imagereward_check \
        WORK_DIR                                                           # one JSON line

Builds what a user downloads, with random weights and nothing fetched: a BLIP med_config.json
(BERT-base with cross-attention, the numbers of THUDM/ImageReward's file), an offline
Hugging Face cache holding a tiny `bert-base-uncased` tokenizer, and ImageReward.pt (the
state dict of the package's own `ImageReward` class, ViT-L/16 + BERT + MLP). Then scores one
224 px image with the package's `score()` (PIL path) and with this project's
ImageRewardScorer loaded from the .pt (tensor path), which must agree. That environment does
not hold this project: the caller puts the folder of its packages on PYTHONPATH
(rglcd/paths.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

PROMPT = "a red circle on a blue background"
MED_CONFIG = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "encoder_width": 768,
    "add_cross_attention": True,
}


def offline_bert_tokenizer(hf_home: Path) -> None:
    """A hub-cache entry for `bert-base-uncased` (what `hf download` would leave), tiny vocab."""
    repo = hf_home / "hub" / "models--bert-base-uncased"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *PROMPT.split()]
    (snapshot / "vocab.txt").write_text("\n".join(words) + "\n")
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (hf_home / "hub" / "version.txt").write_text("1")


def write_random_imagereward(work: Path) -> tuple[Path, Path]:
    """(ImageReward.pt, med_config.json) of the package's architecture with random weights."""
    import torch
    from ImageReward.ImageReward import ImageReward

    med_config = work / "med_config.json"
    med_config.write_text(json.dumps(MED_CONFIG))
    torch.manual_seed(0)
    model = ImageReward(med_config=str(med_config), device="cpu")
    checkpoint = work / "ImageReward.pt"
    torch.save(model.state_dict(), checkpoint)
    return checkpoint, med_config


def main(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    os.environ["HF_HOME"] = str(work / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    offline_bert_tokenizer(work / "hf")
    seconds = {}
    start = time.perf_counter()
    import ImageReward
    import numpy as np
    import torch
    import transformers
    from PIL import Image

    seconds["import"] = time.perf_counter() - start
    checkpoint, med_config = write_random_imagereward(work)
    seconds["build_and_save"] = time.perf_counter() - start - seconds["import"]

    pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    package_model = ImageReward.load(name=str(checkpoint), device="cpu", med_config=str(med_config))
    with torch.no_grad():
        package_score = float(package_model.score(PROMPT, Image.fromarray(pixels)))
    del package_model

    # deferred: loads transformers, which must see the HF_HOME set above
    from reward_service.scorers.imagereward import ImageRewardScorer

    scorer = ImageRewardScorer.from_checkpoint(
        "imagereward", str(checkpoint), str(med_config), "cpu"
    )
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, 224, 224)
    with torch.no_grad():
        scorer_score = float(scorer(image, [PROMPT])[0])
    seconds["total"] = time.perf_counter() - start
    return {
        "package_score": package_score,
        "scorer_score": scorer_score,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
