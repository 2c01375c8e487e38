"""The LRM's latent shards streamed in a local run (trainer/lrm/latent_shards.py), no Ray."""

from __future__ import annotations

import json
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rglcd.codecs import encode_latents
from rglcd.tiny_models import tiny_tokenizer
from trainer.lrm.latent_shards import (
    batch_split,
    local_batches,
    read_latent_captions,
    split_shards,
)


def _shards(folder, shards=3, rows=10):
    """Latent shards whose latents are filled with their row number (to follow each row)."""
    folder.mkdir()
    names = []
    for shard in range(shards):
        numbers = range(shard * rows, (shard + 1) * rows)
        table = pa.table({
            "latent": [encode_latents(torch.full((1, 4, 2, 2), float(n)).half()) for n in numbers],
            "caption": [f"caption {n % 4}" for n in numbers],
        })
        names.append(f"latents-{shard:05d}.parquet")
        pq.write_table(table, folder / names[-1], row_group_size=4)
    manifest = {"scaling_factor": 0.5, "latent_shape": [4, 2, 2],
                "shards": [{"file": n, "rows": rows} for n in names]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _numbers(latents: torch.Tensor) -> list[int]:
    return [int(x) for x in latents[:, 0, 0, 0].tolist()]


def test_each_epoch_streams_every_training_row_once_in_full_batches(tmp_path):
    train, heldout = split_shards(_shards(tmp_path / "latents"), heldout=1)
    assert [f.rsplit("/", 1)[1] for f in heldout] == ["latents-00002.parquet"]
    batches = list(islice(local_batches(train, batch_size=5, seed=0, shuffle_rows=6), 8))
    assert all(latents.shape == (5, 4, 2, 2) and latents.dtype == torch.float16
               for latents, _ in batches)
    first, second = (sum((_numbers(b[0]) for b in batches[k : k + 4]), []) for k in (0, 4))
    assert sorted(first) == sorted(second) == list(range(20))  # two epochs of rows 0..19
    assert first != list(range(20)) and first != second  # shuffled, differently per epoch
    for latents, captions in batches:
        assert captions == [f"caption {n % 4}" for n in _numbers(latents)]


def test_max_rows_caps_an_epoch_and_too_few_rows_for_a_batch_is_an_error(tmp_path):
    train, _ = split_shards(_shards(tmp_path / "latents"), heldout=1)
    batches = list(islice(local_batches(train, batch_size=3, seed=1, max_rows=6), 4))
    assert all(len(set(_numbers(b[0]))) == 3 for b in batches)
    assert len({n for b in batches[:2] for n in _numbers(b[0])}) == 6  # one epoch: 6 rows
    with pytest.raises(ValueError, match="fewer rows than one batch"):
        next(local_batches(train, batch_size=8, seed=0, max_rows=6))


def test_heldout_split_is_read_whole_in_order_and_batches_rank_their_own_captions(tmp_path):
    _, heldout = split_shards(_shards(tmp_path / "latents"), heldout=1)
    latents, captions = read_latent_captions(heldout)
    assert _numbers(latents) == list(range(20, 30)) and len(captions) == 10
    assert _numbers(read_latent_captions(heldout, max_rows=3)[0]) == [20, 21, 22]
    data = batch_split(latents, captions, tiny_tokenizer())
    assert data.captions == [f"caption {k}" for k in range(4)]
    assert [data.captions[i] for i in data.caption_index] == captions
    assert data.input_ids.shape[0] == 4
