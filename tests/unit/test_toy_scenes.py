"""Scene grammar, renderer and Parquet data of the toy world."""

import os

import numpy as np
import pytest

from rglcd.toy.data import ensure_toy_dataset, read_toy_images, read_toy_table
from rglcd.toy.scenes import (
    HELD_OUT_COMBOS,
    TRAIN_COMBOS,
    all_captions,
    all_combos,
    parse_caption,
    render,
    sample_scenes,
)


def test_grammar_sizes_and_held_out_split():
    assert len(all_combos()) == 224
    assert len(HELD_OUT_COMBOS) == 32 and not set(HELD_OUT_COMBOS) & set(TRAIN_COMBOS)
    assert len(all_captions()) == 448
    held = {(s.colour, s.shape, s.bg) for s in sample_scenes("heldout", 300)}
    train = {(s.colour, s.shape, s.bg) for s in sample_scenes("train", 300)}
    assert held <= set(HELD_OUT_COMBOS) and not train & set(HELD_OUT_COMBOS)


def test_parse_caption_round_trip_and_errors():
    caption = "a small red circle on a blue background"
    assert parse_caption(caption) == {"size": "small", "colour": "red", "shape": "circle",
                                      "bg": "blue"}
    for bad in ("a red circle", "a small pink circle on a blue background",
                "a small red circle on a red background"):
        with pytest.raises(ValueError, match="caption"):
            parse_caption(bad)


def test_render_is_deterministic_and_flat():
    a, b = sample_scenes("validation", 5, seed=3), sample_scenes("validation", 5, seed=3)
    assert a == b and a != sample_scenes("validation", 5, seed=4)
    image = render(a[0])
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert len(np.unique(image.reshape(-1, 3), axis=0)) == 2  # object colour + background


def test_parquet_shards_round_trip(tmp_path):
    paths = ensure_toy_dataset(tmp_path, "train", 30, seed=1)
    mtime = os.stat(paths[0]).st_mtime_ns
    assert os.stat(ensure_toy_dataset(tmp_path, "train", 30, seed=1)[0]).st_mtime_ns == mtime
    images, captions = read_toy_images(tmp_path, "train")
    scenes = sample_scenes("train", 30, seed=1)
    assert images.shape == (30, 32, 32, 3)
    assert captions == [s.caption for s in scenes]
    np.testing.assert_array_equal(images[7], render(scenes[7]))
    assert {"image", "caption", "colour", "shape", "size", "bg"} <= set(
        read_toy_table(tmp_path, "train").column_names)
    with pytest.raises(ValueError, match="ensure_toy_dataset"):
        read_toy_images(tmp_path, "heldout")
