"""rglcd/shared_disk.py without a cluster: an object-store location is shared by definition and
is never probed (the multi-node case runs in the three-node rehearsal, whose negative control
gives a local output folder to nodes that share no disk)."""

from __future__ import annotations

import pytest

from rglcd.shared_disk import nodes_not_seeing


@pytest.mark.parametrize("location", ["s3://bucket/runs", "gs://bucket/runs"])
def test_object_store_locations_are_not_probed(location):
    assert nodes_not_seeing(location) == []
