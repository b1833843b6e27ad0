"""First look: reduce a raw dataset with the default recipe, then explore it.

What the dataset browser's "visualize" links open: the gateway starts this
app on the raw dataset (a path or fsspec URL); it reduces it with the default
recipe (at most ~96³ points, one isosurface, one slice) on a small in-process
Dask cluster, keeps the result in the shared reduce cache
(``$HPCVIZ_HOME/reduced``, so the next click starts at once), and shows it
in the explorer. A reduced directory is shown as it is.

Remote data is read with fsspec's usual environment credentials (for
``az://``: ``AZURE_STORAGE_CONNECTION_STRING`` or ``AZURE_STORAGE_ACCOUNT_NAME``
+ ``AZURE_STORAGE_ACCOUNT_KEY`` in the viz server's environment).

Example:
    >>> app = create_app("/scratch/run7/output.pvd")   # doctest: +SKIP
    >>> app.server.start(port=0, open_browser=False)    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect_hpcviz.viz.apps.explorer import ExplorerApp, prepare
from prefect_hpcviz.viz.paths import hpcviz_home
from prefect_hpcviz.viz.scene import load_view_data
from prefect_hpcviz.viz.view_preset import VIEW_ENV, ViewPreset

__all__ = ["create_app", "prepare", "reduce_for_first_look"]

log = logging.getLogger(__name__)


def reduce_for_first_look(data_path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Any:
    """The dataset reduced with the default recipe (reused when reduced before), or a reduced dir as it is.

    Example:
        >>> reduce_for_first_look("/scratch/run7/output.pvd").path     # doctest: +SKIP
        PosixPath('/home/me/.hpcviz/reduced/3f2a9c0d1b7e4a55')
    """
    # adlfs sets fsspec's I/O loop as the calling thread's current event loop,
    # which the web server later finds "already running": open and reduce in a
    # thread of their own.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpcviz-first-look") as pool:
        return pool.submit(_reduce, data_path, out_dir).result()


def _reduce(data_path: str | os.PathLike, out_dir: str | os.PathLike | None) -> Any:
    data = load_view_data(data_path)
    if hasattr(data, "volume_files"):
        return data
    from distributed import Client, LocalCluster

    from prefect_hpcviz.viz.reduce import reduce_dataset

    out = Path(out_dir) if out_dir else hpcviz_home() / "reduced"
    with LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        reduced = reduce_dataset(data, None, out, client=client)
    log.info("%s: %s %s", data_path, "reused" if reduced.cached else f"reduced in {reduced.seconds:.1f} s to",
             reduced.path)
    return reduced


def create_app(
    data_path: str | os.PathLike, server: Any = None, *, plotter: Any = None, view: ViewPreset | None = None
) -> ExplorerApp:
    """Reduce ``data_path`` with the default recipe (once) and build the explorer on the result.

    Raises:
        InputError: the data cannot be opened or reduced.
    """
    if view is None:
        view = ViewPreset.from_json(os.environ.get(VIEW_ENV))
    return ExplorerApp(reduce_for_first_look(data_path), server=server, plotter=plotter, view=view)
