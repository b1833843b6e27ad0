"""Out-of-core reduction of an N^3 float32 Zarr volume: read bound, single-process baseline, ours.

Every measurement runs in a fresh child process, so each peak resident
memory (``ru_maxrss``) belongs to that measurement alone:

- read bound: every byte read once, a sum over the Zarr array (dask, 2 threads);
- baseline: what a user writes today: the whole array in memory, PyVista/VTK
  flying edges, ``slice``, a NumPy block mean, results written as VTK XML;
- ours: ``reduce_dataset`` on ``reduction_cluster(1 | 2)`` (a LocalCluster)
  (cluster start and module imports not counted, as the baseline's imports
  are not), peak RSS of the driver and of every worker.

Recipes (DESIGN.md format; isosurfaces and slice at full resolution):

    light: {steps: [{slice: {normal: [0, 0, 1]}}, {coarsen: {factor: 4}}]}
    full:  {steps: [{contour: {field: f, values: [0.5, 1.5]}},
                    {slice: {normal: [0, 0, 1]}}, {coarsen: {factor: 4}}]}

The field is the distance from the centre (isosurfaces: a sphere and a
sphere cut by the box) plus a small wave. Data lives under --root, never in
the repository.

    .venv/bin/python benchmarks/reduce.py --size 512 [--root /tmp/hpcviz-bench]
    .venv/bin/python benchmarks/reduce.py --shape 1024,2048,2048 --only-ours --workers 2   # 16 GiB

Prints a markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

RECIPES = {
    "light": {"steps": [{"slice": {"normal": [0, 0, 1]}}, {"coarsen": {"factor": 4}}]},
    "full": {"steps": [{"contour": {"field": "f", "values": [0.5, 1.5]}},
                       {"slice": {"normal": [0, 0, 1]}}, {"coarsen": {"factor": 4}}]},
}
GiB = 2**30


# -- data ---------------------------------------------------------------------------------------

def _field_block(block_info=None):
    import numpy as np

    info = block_info[None]
    (z0, z1), (y0, y1), (x0, x1) = info["array-location"]
    nz, ny, nx = info["shape"]
    scale = 2.0 / min(nx, ny, nz)  # the smallest side spans [-1, 1]
    z = (np.arange(z0, z1, dtype=np.float32) - (nz - 1) / 2) * scale
    y = (np.arange(y0, y1, dtype=np.float32) - (ny - 1) / 2) * scale
    x = (np.arange(x0, x1, dtype=np.float32) - (nx - 1) / 2) * scale
    r2 = z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2
    wave = 0.02 * np.sin(x * 40.0)[None, None, :] * np.cos(y * 30.0)[None, :, None]
    return (np.sqrt(r2) * 1.2 + wave).astype(np.float32)  # f = 0.5: a sphere; 1.5: cut by the box


def make_volume(path: Path, shape: tuple[int, int, int], chunk: int = 128) -> None:
    """An f[z, y, x] float32 Zarr store, written chunk by chunk (idempotent)."""
    import dask
    import dask.array as da
    import xarray as xr

    if (path / "zarr.json").exists() or (path / ".zgroup").exists():
        return
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    data = da.empty(shape, chunks=chunk, dtype="float32").map_blocks(
        lambda _, block_info=None: _field_block(block_info), dtype="float32")
    with dask.config.set(scheduler="threads", num_workers=2):
        xr.Dataset({"f": (("z", "y", "x"), data)}).to_zarr(tmp, mode="w")
    tmp.rename(path)


# -- measurements, each in its own process ------------------------------------------------------

def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_read(store: str) -> dict:
    import dask
    import dask.array as da

    array = da.from_zarr(store, component="f")
    started = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=2):
        total = float(array.sum(dtype="float64").compute())
    return {"seconds": time.perf_counter() - started, "peak_mb": {"process": _peak_mb()}, "check": total}


def measure_baseline(store: str, recipe_name: str, out: str) -> dict:
    import numpy as np
    import pyvista as pv
    import zarr

    started = time.perf_counter()
    values = zarr.open_array(store, path="f", mode="r")[...]
    nz, ny, nx = values.shape
    grid = pv.ImageData(dimensions=(nx, ny, nz))
    grid.point_data["f"] = values.reshape(-1)
    os.makedirs(out, exist_ok=True)
    if recipe_name == "full":
        grid.contour([0.5, 1.5], scalars="f", method="flying_edges").save(f"{out}/contour.vtp")
    grid.slice(normal="z").save(f"{out}/slice.vtp")
    f = 4
    block = values[: nz // f * f, : ny // f * f, : nx // f * f].reshape(nz // f, f, ny // f, f, nx // f, f)
    small = pv.ImageData(dimensions=(nx // f, ny // f, nz // f), spacing=(f, f, f), origin=((f - 1) / 2,) * 3)
    small.point_data["f"] = block.mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32).reshape(-1)
    small.save(f"{out}/volume.vti")
    return {"seconds": time.perf_counter() - started, "peak_mb": {"process": _peak_mb()}}


def _import_engine() -> None:
    import prefect_hpcviz.viz.reduce.volume_tasks  # noqa: F401  (pulls in vtk, pyvista, zarr, xarray)


def _worker_peak_mb() -> float:
    import resource as r

    return r.getrusage(r.RUSAGE_SELF).ru_maxrss / 1024


def measure_ours(store: str, recipe_name: str, out: str, workers: int) -> dict:
    from distributed import Client

    from prefect_hpcviz.viz.reduce import Recipe, reduce_dataset
    from prefect_hpcviz.viz.reduce.local_cluster import reduction_cluster

    shutil.rmtree(out, ignore_errors=True)
    recipe = Recipe.from_dict(RECIPES[recipe_name])
    with reduction_cluster(workers) as cluster, Client(cluster) as client:
        client.run(_import_engine)  # imports are outside the timing, as in the baseline
        started = time.perf_counter()
        data = reduce_dataset(store, recipe, out, client=client)
        seconds = time.perf_counter() - started
        workers_mb = client.run(_worker_peak_mb)
    peaks = {"driver": _peak_mb(), **{f"worker {i + 1}": mb for i, mb in enumerate(workers_mb.values())}}
    return {"seconds": seconds, "peak_mb": peaks, "bytes_out": data.bytes_out}


def run_child(kind: str, *args: str) -> dict:
    """Run one measurement in a fresh Python process; its JSON result."""
    command = [sys.executable, __file__, "--child", kind, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(argv: list[str]) -> None:
    kind, *args = argv
    if kind == "read":
        result = measure_read(*args)
    elif kind == "baseline":
        result = measure_baseline(*args)
    else:
        result = measure_ours(args[0], args[1], args[2], int(args[3]))
    print(json.dumps(result))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="N for an N^3 volume (default 1024: 4 GiB)")
    parser.add_argument("--shape", help="z,y,x instead of --size (e.g. 1024,2048,2048 for 16 GiB)")
    parser.add_argument("--root", default="/tmp/hpcviz-bench", help="where data and outputs go")
    parser.add_argument("--recipes", default="light,full")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--only-ours", action="store_true", help="skip the read bound and the baseline")
    parser.add_argument("--keep", action="store_true", help="keep the volume afterwards")
    parser.add_argument("--reuse-heap", action="store_true",
                        help="workers keep freed memory in their heap (HPCVIZ_REUSE_HEAP=1; see local_cluster.py)")
    args = parser.parse_args()
    if args.reuse_heap:
        os.environ["HPCVIZ_REUSE_HEAP"] = "1"  # read by reduction_cluster in each child
    shape = tuple(int(v) for v in args.shape.split(",")) if args.shape else (args.size,) * 3
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    store = root / f"volume-{'x'.join(map(str, shape))}.zarr"
    started = time.perf_counter()
    make_volume(store, shape)
    size_gib = shape[0] * shape[1] * shape[2] * 4 / GiB
    print(f"volume {store} ({size_gib:.1f} GiB) ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    rows = []
    if not args.only_ours:
        read = run_child("read", str(store))
        rows.append(("read bound (sum over the Zarr array)", "-", read))
    for recipe in args.recipes.split(","):
        if not args.only_ours:
            rows.append(("baseline: PyVista/VTK, whole array", recipe,
                         run_child("baseline", str(store), recipe, str(root / f"baseline-{recipe}"))))
        for workers in args.workers.split(","):
            rows.append((f"ours, {workers} worker{'s' if workers != '1' else ''}", recipe,
                         run_child("ours", str(store), recipe, str(root / f"ours-{recipe}-{workers}"), workers)))
        print(f"{recipe} done", file=sys.stderr)

    read_s = rows[0][2]["seconds"] if not args.only_ours else None
    print(f"\n{'x'.join(map(str, shape[::-1]))} float32 Zarr ({size_gib:.1f} GiB), {os.cpu_count()} cores\n")
    print("| run | recipe | time (s) | vs read bound | vs baseline | peak RSS per process (MB) |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name, recipe, result in rows:
        base = next((r[2]["seconds"] for r in rows if r[1] == recipe and r[0].startswith("baseline")), None)
        seconds = result["seconds"]
        vs_read = f"{seconds / read_s:.2f}x" if read_s else "-"
        vs_base = f"{base / seconds:.2f}x faster" if base and not name.startswith(("baseline", "read")) else "-"
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in result["peak_mb"].items())
        print(f"| {name} | {recipe} | {seconds:.1f} | {vs_read} | {vs_base} | {peaks} |")
    if not args.keep:
        shutil.rmtree(store)


if __name__ == "__main__":
    main()
