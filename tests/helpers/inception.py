"""The FID Inception network (torch-fidelity's) with random weights, saved to a local file
that `fid.inception_weights` points at: the real architecture, nothing downloaded."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch


def save_random_inception_weights(path: Path, seed: int = 0) -> Path:
    from torch_fidelity import feature_extractor_inceptionv3 as module

    torch.manual_seed(seed)
    # The constructor loads weights from a URL when given no file: build it with that load
    # (and the state-dict check) switched off, then save what it initialised.
    with mock.patch.object(module, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(module.FeatureExtractorInceptionV3, "load_state_dict"):
        network = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(network.state_dict(), path)
    return path
