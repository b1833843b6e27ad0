"""A program that read az:// data exits without adlfs' "RuntimeError: Loop is not running".

adlfs closes its Blob clients from finalizers at exit; for the file systems
zarr makes (``asynchronous=True``, on zarr's loop) that finalizer always
fails. ``viz/datasets/adlfs_exit.py`` closes them on their loop first. Real
processes reading from Azurite: a script, and ``hpcviz reduce`` with Dask
worker processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.azurite

SYMPTOMS = ("Loop is not running", "Traceback", "Unclosed client session", "Unclosed connector")

READ_AND_EXIT = textwrap.dedent("""
    import gc, os, sys, weakref
    import adlfs
    from prefect_hpcviz.viz.datasets import open_dataset

    options = {"connection_string": os.environ["HPCVIZ_TEST_BLOB"]}
    for source in sys.argv[1:]:
        dataset = open_dataset(source, storage_options=options)
        field = dataset.summary().fields[0].name
        print(source, float(dataset.volume(0, field).data.sum().compute()))
    # What made adlfs fail at exit: file systems with no loop of their own (zarr's).
    loopless = [f for f in gc.get_objects() if isinstance(f, weakref.finalize) and f.alive
                and isinstance((f.peek() or [None])[0], adlfs.AzureBlobFileSystem) and f.peek()[2][0] is None]
    print("loopless file systems:", len(loopless))
""")


@pytest.fixture(scope="module")
def blob_data(azurite, small_simulation, tmp_path_factory):
    """A .pvd series and a Zarr store in a container: their az:// URLs."""
    import fsspec
    import numpy as np
    import xarray as xr

    fs = fsspec.filesystem("az", **azurite.storage_options)
    container = azurite.new_container("exit")
    fs.put(str(small_simulation.parent), f"{container}/run", recursive=True)
    store = tmp_path_factory.mktemp("zarr") / "volume.zarr"
    axes = {"time": [0.0, 1.0], "z": np.arange(12.0), "y": np.arange(10.0), "x": np.arange(8.0)}
    values = np.random.default_rng(3).random((2, 12, 10, 8), dtype=np.float32)
    xr.Dataset({"p": (tuple(axes), values)}, coords=axes).to_zarr(store, zarr_format=3,
                                                                  encoding={"p": {"chunks": (1, 6, 5, 4)}})
    fs.put(str(store), f"{container}/volume.zarr", recursive=True)
    return f"az://{container}/run/{small_simulation.name}", f"az://{container}/volume.zarr"


def run(argv: list[str], azurite, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HPCVIZ_TEST_BLOB": azurite.connection_string,
           "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string, "HPCVIZ_HOME": str(tmp_path / "home")}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_a_script_that_read_az_data_exits_with_a_clean_stderr(azurite, blob_data, tmp_path):
    done = run([sys.executable, "-W", "ignore", "-c", READ_AND_EXIT, *blob_data], azurite, tmp_path)

    assert done.returncode == 0, done.stderr
    assert all(source in done.stdout for source in blob_data), done.stdout
    assert "loopless file systems: 0" not in done.stdout, "the read made none of the file systems that failed"
    assert not [s for s in SYMPTOMS if s in done.stderr], done.stderr


def test_hpcviz_reduce_of_az_data_on_worker_processes_exits_with_a_clean_stderr(azurite, blob_data, tmp_path):
    hpcviz = os.path.join(os.path.dirname(sys.executable), "hpcviz")
    done = run([hpcviz, "reduce", blob_data[1], "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress"],
               azurite, tmp_path)

    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "out").glob("*/manifest.json")), done.stdout
    assert not [s for s in SYMPTOMS if s in done.stderr], done.stderr
