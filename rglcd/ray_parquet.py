"""`ray.data.read_parquet` through Ray Data's V1 Parquet datasource.

Ray 2.60 reads Parquet with its V2 datasource by default, which first lists the files in a
separate task with a pool of footer-reader workers. On a small node that listing costs
seconds per read even for a one-file data set, and the V1 datasource skips it. Every
training run starts with such a read (so its first step waits for it), and so does the
data job on Parquet input. V1 reads the same columns, paths and rows; it lacks only V2's
``ignore_missing_paths`` / ``skip_paths``, which nothing here uses.
"""

from __future__ import annotations


def read_parquet(paths, **kwargs):
    """``ray.data.read_parquet(paths, **kwargs)`` planned with the V1 datasource.

    The choice is made when the read is planned, so the driver's DataContext flag is set only
    for this call and restored after it.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    previous = context.use_datasource_v2
    context.use_datasource_v2 = False
    try:
        return ray.data.read_parquet(paths, **kwargs)
    finally:
        context.use_datasource_v2 = previous
