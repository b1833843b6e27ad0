"""Time reduce_dataset on the synthetic simulation with the default recipe.

Prints one line per phase: writing the input, summarizing it, the reduction
on a fresh process-based LocalCluster, and the cached second run.

    python benchmarks/reduce_synthetic.py --shape 192 --steps 6 --workers 2 --out /tmp/hpcviz-bench
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from distributed import Client, LocalCluster

from prefect_hpcviz.viz.datasets import open_dataset, write_synthetic
from prefect_hpcviz.viz.reduce import Recipe, reduce_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=192, help="points per axis")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/hpcviz-bench"))
    args = parser.parse_args()

    t = time.perf_counter()
    pvd = write_synthetic(args.out / "sim", shape=(args.shape,) * 3, steps=args.steps)
    print(f"write_synthetic {args.shape}^3 x {args.steps}: {time.perf_counter() - t:.2f} s")

    dataset = open_dataset(pvd)
    t = time.perf_counter()
    summary = dataset.summary()
    print(f"summary (reads every step): {time.perf_counter() - t:.2f} s, {dataset.nbytes / 1e6:.0f} MB")
    recipe = Recipe.default_for(summary)
    print("default recipe:", recipe.canonical_json())

    reduced = args.out / "reduced"
    shutil.rmtree(reduced, ignore_errors=True)
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        t = time.perf_counter()
        data = reduce_dataset(dataset, recipe, reduced, client=client, summary=summary)
        print(f"reduce on {args.workers} workers: {time.perf_counter() - t:.2f} s "
              f"({data.bytes_in / 1e6:.0f} MB in, {data.bytes_out / 1e6:.1f} MB out)")
        t = time.perf_counter()
        again = reduce_dataset(pvd, recipe, reduced, client=client)
        print(f"second run (cached={again.cached}): {time.perf_counter() - t:.3f} s")
    t = time.perf_counter()
    shutil.rmtree(reduced)
    data = reduce_dataset(pvd, recipe, reduced)
    print(f"reduce with client=None (starts its own LocalCluster): {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
