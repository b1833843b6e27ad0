"""Reduction throughput reading a dataset from Azure Blob (Azurite) against reading it from local disk.

The same N^3 float32 Zarr volume (benchmarks/reduce.py's field, 128^3 chunks)
lies twice: in a local folder and in an Azurite container. In one run, on one
cluster (Dask workers that are Azure Batch tasks on the loopback Batch test
double, as ``AzureBatchDaskCluster`` starts them), the same recipe reduces
each copy ``--repeat`` times, alternating which goes first, each time into a
fresh output folder (no reuse of an earlier result):

    local disk   open_dataset("/.../volume.zarr")
    Azurite      open_dataset("az://bench/volume.zarr", storage_options=...)   (adlfs, streamed)

MB/s is the volume's bytes (N^3 x 4, uncompressed; the table also gives the
bytes stored, which the reduction reads) divided by the wall time of open +
reduce; the ratio is Azurite / local, the median of the rounds' ratios. Azurite runs on
this machine, so the figure is what our Blob path (adlfs, the SDK, HTTP)
costs, not a real network's bandwidth.

    .venv/bin/python benchmarks/azure_blob_reduce.py [--size 256] [--repeat 3] [--workers 2] [--recipe light]

Needs Azurite (``scripts/setup.sh`` installs it into .bench/). Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from azure_batch_double import BatchDouble  # noqa: E402  (the test double)
from azure_batch_launch import AZURITE_KEY, start_azurite  # noqa: E402
from reduce import RECIPES, make_volume  # noqa: E402


def reduce_once(source: str, storage_options: dict, recipe: dict, out: Path, client) -> dict[str, float]:
    """Open and reduce ``source`` on ``client``; wall seconds and the bytes stored that it read."""
    from prefect_hpcviz.viz.datasets import open_dataset
    from prefect_hpcviz.viz.reduce import Recipe, reduce_dataset

    started = time.perf_counter()
    dataset = open_dataset(source, storage_options=storage_options)
    reduced = reduce_dataset(dataset, Recipe.from_dict(recipe), out, client=client)
    seconds = time.perf_counter() - started
    assert not reduced.cached, "a fresh output folder must not reuse an earlier result"
    return {"seconds": seconds, "stored": reduced.bytes_in}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="volume side N (N^3 float32)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (Batch-double tasks)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="light")
    parser.add_argument("--root", type=Path, default=None, help="keep the volume here between runs (else a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hpcviz-blob-reduce-") as temporary:
        run(args, Path(args.root or temporary), Path(temporary))


def run(args: argparse.Namespace, data: Path, work: Path) -> None:
    """Volume under ``data`` (kept with --root); Azurite, nodes and outputs under ``work`` (this run's)."""
    import gc

    import fsspec

    from prefect_hpcviz.blocks import AzureBatchDaskCluster, AzureBatchLauncher

    volume = data / f"volume-{args.size}.zarr"
    make_volume(volume, (args.size,) * 3)
    nbytes = args.size**3 * 4
    azurite, endpoint = start_azurite(work / "azurite")
    connection = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    options = {"connection_string": connection}
    try:
        fs = fsspec.filesystem("az", **options)
        fs.mkdir("bench")
        fs.put(str(volume), "bench/volume.zarr", recursive=True)
        sources = {"local disk": (str(volume), {}), "Azurite (az://)": ("az://bench/volume.zarr", options)}
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
        ratios = []
        with BatchDouble(work / "nodes") as double:
            double.add_pool("reduce", nodes=1, slots_per_node=args.workers)
            batch = AzureBatchLauncher(account_url=double.url, account_name=double.account_name,
                                       account_key=double.account_key, pool_id="reduce", python=sys.executable)  # fmt: skip
            cluster = AzureBatchDaskCluster(batch=batch, scheduler_host="127.0.0.1", workers=args.workers)
            with cluster.get_client() as client:
                client.wait_for_workers(args.workers, timeout=120)
                for round_ in range(args.repeat):
                    order = list(sources) if round_ % 2 == 0 else list(reversed(sources))
                    result = {}
                    for name in order:
                        source, storage_options = sources[name]
                        out = work / "out" / f"{round_}-{name.split()[0]}"
                        result[name] = reduce_once(source, storage_options, RECIPES[args.recipe], out, client)
                        rows[name].append(result[name])
                    local, blob = (nbytes / result[n]["seconds"] for n in sources)
                    ratios.append(blob / local)
                    print(f"round {round_ + 1}: local {local / 1e6:.0f} MB/s, Azurite {blob / 1e6:.0f} MB/s", file=sys.stderr)
    finally:
        fsspec.AbstractFileSystem.clear_instance_cache()  # close adlfs clients while their loop runs
        gc.collect()
        azurite.terminate()
        azurite.wait()

    stored = rows["local disk"][0]["stored"] / 1e6
    print(f"\n{args.size}^3 float32 Zarr ({nbytes / 1e6:.0f} MB, {stored:.0f} MB stored, 128^3 chunks), recipe {args.recipe}, "
          f"{args.workers} Batch-double Dask workers, {args.repeat} rounds (medians)\n")  # fmt: skip
    print("| source | seconds | MB/s | vs local disk |")
    print("| --- | ---: | ---: | ---: |")
    for name, runs in rows.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        rate = statistics.median(nbytes / r["seconds"] for r in runs) / 1e6
        ratio = 1.0 if name == "local disk" else statistics.median(ratios)
        print(f"| {name} | {seconds:.2f} | {rate:.0f} | {ratio:.2f}× |")


if __name__ == "__main__":
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    main()
