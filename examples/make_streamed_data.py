"""Write a dataset for the streamed sources (``configs/streamed-npy.yaml`` and
``configs/streamed-parquet.yaml``): float32 features and a class label per row, as
``.npy`` shards and as Parquet files, plus validation files of each.

    python examples/make_streamed_data.py                 # 200,000 rows x 64 features (50 MiB)
    python examples/make_streamed_data.py --rows 4194304 --features 256   # 4 GiB

The label of a row is the largest of a fixed random linear map of its features (10
classes), so a model can learn it. Writes into ``data/streamed/`` next to ``configs/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "data/streamed")
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = args.out
    (out / "npy").mkdir(parents=True, exist_ok=True)
    (out / "parquet").mkdir(parents=True, exist_ok=True)
    mix = np.random.default_rng(99).normal(size=(args.features, 10)).astype("float32")
    names = [f"f{i}" for i in range(args.features)]
    for part, rows, shards in (("train", args.rows, args.shards), ("val", args.rows // 10, 1)):
        rng = np.random.default_rng(len(part))
        per_shard = -(-rows // shards)
        for shard in range(shards):
            count = min(per_shard, rows - shard * per_shard)
            x = rng.standard_normal((count, args.features), dtype="float32")
            y = (x @ mix).argmax(1).astype("int64")
            np.save(out / "npy" / f"{part}-x-{shard:03d}.npy", x)
            np.save(out / "npy" / f"{part}-y-{shard:03d}.npy", y)
            table = pa.table({**{n: x[:, i] for i, n in enumerate(names)}, "label": y})
            folder = out / "parquet" / part
            folder.mkdir(exist_ok=True)
            pq.write_table(table, folder / f"{shard:03d}.parquet", row_group_size=16384)
    print(f"wrote {args.rows} training rows of {args.features} features to {out}")


if __name__ == "__main__":
    main()
