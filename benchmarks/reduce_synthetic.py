"""Reduction of the demo simulation: our Dask engine against the single-process
script a user would write today, in the same run.

The recipe is the default the demo uses (coarsen 2 -> 96^3, one isosurface of
pressure, one z-slice), on the synthetic 192^3 x 6-step .pvd series. The
baseline reads each step with PyVista, block-means it with NumPy, contours and
slices it with PyVista and writes the results, one step after another in one
process. Ours runs the same recipe as a Dask graph on a LocalCluster of 1 and
2 worker processes (cluster start not counted: a flow's cluster is already up),
then once more to show the cache.

    .venv/bin/python benchmarks/reduce_synthetic.py [--shape 192] [--steps 6] [--out /tmp/hpcviz-bench]

Prints a markdown table for README.md.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pyvista as pv
from distributed import Client, LocalCluster

from prefect_hpcviz.viz.datasets import open_dataset, write_synthetic
from prefect_hpcviz.viz.reduce import Recipe, reduce_dataset


def baseline(pvd: Path, recipe: Recipe, out: Path) -> float:
    """The whole recipe in one process with PyVista + NumPy; seconds."""
    dataset = open_dataset(pvd)
    coarsen = next(s.spec for s in recipe.steps if s.kind == "coarsen")
    contour = next(s.spec for s in recipe.steps if s.kind == "contour")
    factor = coarsen.factor[0] if isinstance(coarsen.factor, (list, tuple)) else coarsen.factor
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for step in range(dataset.n_steps):
        grid = dataset.read(step)
        nx, ny, nz = (d // factor * factor for d in grid.dimensions)
        small = pv.ImageData(
            dimensions=(nx // factor, ny // factor, nz // factor),
            spacing=tuple(s * factor for s in grid.spacing),
            origin=tuple(o + (factor - 1) * s / 2 for o, s in zip(grid.origin, grid.spacing)),
        )
        for name in grid.point_data.keys():
            values = np.asarray(grid.point_data[name]).reshape(grid.dimensions[::-1] + (-1,))
            block = values[:nz, :ny, :nx].reshape(nz // factor, factor, ny // factor, factor, nx // factor, factor, -1)
            small.point_data[name] = block.mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32).reshape(-1, values.shape[-1]).squeeze()
        small.save(out / f"volume_{step}.vti")
        small.contour(list(contour.values), scalars=contour.field, method="flying_edges").save(out / f"contour_{step}.vtp")
        small.slice(normal="z").save(out / f"slice_{step}.vtp")
    return time.perf_counter() - started


def ours(pvd: Path, recipe: Recipe, out: Path, workers: int) -> tuple[float, float, int, int]:
    """Seconds for a fresh and a cached run on `workers` processes; bytes in and out."""
    shutil.rmtree(out, ignore_errors=True)
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        started = time.perf_counter()
        data = reduce_dataset(pvd, recipe, out, client=client)
        fresh = time.perf_counter() - started
        started = time.perf_counter()
        again = reduce_dataset(pvd, recipe, out, client=client)
        assert again.cached
        cached = time.perf_counter() - started
    return fresh, cached, data.bytes_in, data.bytes_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=192, help="points per axis")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("/tmp/hpcviz-bench"))
    args = parser.parse_args()

    pvd = write_synthetic(args.out / "sim", shape=(args.shape,) * 3, steps=args.steps)
    recipe = Recipe.default_for(open_dataset(pvd).summary())
    base = baseline(pvd, recipe, args.out / "baseline")
    rows = [("single process, PyVista + NumPy (baseline)", base, None)]
    for workers in (1, 2):
        fresh, cached, bytes_in, bytes_out = ours(pvd, recipe, args.out / f"reduced-{workers}", workers)
        rows.append((f"hpcviz on a LocalCluster, {workers} worker(s)", fresh, base / fresh))
    rows.append(("hpcviz, unchanged inputs (cache hit)", cached, base / cached))
    print(f"{args.shape}^3 x {args.steps} steps, {bytes_in / 1e6:.0f} MB in, {bytes_out / 1e6:.1f} MB out; recipe {recipe.canonical_json()}\n")
    print("| run | seconds | speed-up vs. baseline |\n| --- | ---: | ---: |")
    for what, seconds, ratio in rows:
        print(f"| {what} | {seconds:.2f} | {'1.00x' if ratio is None else f'{ratio:.2f}x'} |")


if __name__ == "__main__":
    main()
