"""The scale bench on a small dataset: the schema's writer makes the base shards, larger sets
link them, a full pass is batched, and the section renders what was measured."""

from benchmarks import scale
from benchmarks.render import render_scale


def test_a_pass_over_linked_shards_batches_every_row_and_renders(tmp_path):
    made = scale.make(tmp_path, rows=32)
    assert made["rows"] == 32 and made["bytes"] > 0
    runs = []
    for rows in (32, 320):
        data = scale.dataset(tmp_path, rows, tmp_path / f"rows-{rows}")
        assert data.rows == rows and len(set(data.files)) == rows // scale.SHARD_ROWS
        runs.append({"way": "one", "rows": rows, **scale.measure_one(data)})
        # Every generated token of the pass was batched: nothing dropped, nothing twice.
        assert runs[-1]["tokens"] == rows * scale.GENERATED
        # Peak anonymous memory above the pass's start: a small pass in a process that freed more
        # before it may need none (seen in a fresh-clone run: 0), so only its type and sign are sure.
        assert isinstance(runs[-1]["driver_peak"], int) and runs[-1]["driver_peak"] >= 0 and runs[-1]["rows_per_s"] > 0
    text = "\n".join(render_scale({"runs": runs}))
    assert "| one process (`train.workers = 1`) | 320 |" in text
    assert "peak memory at 320 rows is" in text and "(goal at most 1.2x, " in text and "(goal: at most 10% slower, " in text
