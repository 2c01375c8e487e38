"""rglcd.ray_parquet.read_parquet: the V1-datasource read the trainer and data job use."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq


def test_reads_every_row_with_v1_and_restores_the_context(ray_cluster, tmp_path):
    import ray.data

    from rglcd.ray_parquet import read_parquet

    files = []
    for shard in range(2):
        path = tmp_path / f"part-{shard}.parquet"
        pq.write_table(pa.table({"caption": [f"c{shard}-{i}" for i in range(5)],
                                 "n": list(range(shard * 5, shard * 5 + 5))}), path)
        files.append(str(path))
    context = ray.data.DataContext.get_current()
    before = context.use_datasource_v2

    dataset = read_parquet(files, columns=["caption"], include_paths=True)

    assert context.use_datasource_v2 == before  # the driver's setting is untouched
    rows = dataset.take_all()
    operators = [line for line in dataset.stats().splitlines() if line.startswith("Operator")]
    assert any("ReadParquet" in line for line in operators), operators
    assert not any("ListFiles" in line for line in operators), operators  # V2's listing stage
    assert sorted(r["caption"] for r in rows) == sorted(f"c{s}-{i}" for s in range(2)
                                                         for i in range(5))
    assert set(rows[0]) == {"caption", "path"}
