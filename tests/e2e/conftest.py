"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import pytest

from orchestration.cluster_rehearsal.object_store import ObjectStore


@pytest.fixture(scope="module")
def s3_bucket():
    """A bucket on an S3-compatible store on loopback (the rehearsal's moto server), reached
    through the standard AWS environment, which is set for the module's tests; yields its URI."""
    with ObjectStore("rglcd-test") as store, pytest.MonkeyPatch.context() as patch:
        for key, value in store.env.items():
            patch.setenv(key, value)
        yield store.uri()
