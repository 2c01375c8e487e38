"""FID with the real Inception architecture (random weights from a local file, no download),
accumulated chunk by chunk as the streaming evaluation does."""

from __future__ import annotations

import math

import numpy as np
import torch

from orchestration.evaluation.config import FidConfig
from orchestration.evaluation.image_metrics import (
    FeatureMoments,
    feature_network,
    frechet_distance,
    num_features,
)
from tests.helpers.inception import save_random_inception_weights


def test_inception_features_from_a_local_weights_file(tmp_path):
    weights = save_random_inception_weights(tmp_path / "pt_inception-random.pth")
    cfg = FidConfig(features="inception", inception_weights=str(weights))
    network = feature_network(cfg)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        features = network(images)
    assert features.shape == (6, num_features(cfg)) == (6, 2048)
    reference, generated = FeatureMoments(), FeatureMoments()
    reference.add(features[:3])
    generated.add(features[3:5])
    generated.add(features[5:])
    assert math.isfinite(frechet_distance(generated, reference))
