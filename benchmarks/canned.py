"""Regenerating canned visualizations: first run, unchanged rerun, one input touched.

A catalog of N entries (each a synthetic SIZE³ × STEPS .pvd series, reduced
with coarsen 2 + one isosurface + one slice, thumbnails at two sizes) is
regenerated three times in one process against a real Prefect API (the test
harness: a temporary server with SQLite) and an embedded gateway:

1. first run: every entry is reduced (the baseline, 1.00x);
2. unchanged rerun: every reduction and thumbnail comes from Prefect's task cache;
   no Dask cluster is started;
3. one input touched (its mtime moved): only that entry is reduced again.

    .venv/bin/python benchmarks/canned.py [--entries 4] [--size 96] [--steps 4] [--workers 2]

Prints a markdown table for README.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=4, help="catalog entries (default 4)")
    parser.add_argument("--size", type=int, default=96, help="grid points per axis (default 96)")
    parser.add_argument("--steps", type=int, default=4, help="time steps per dataset (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hpcviz-bench-canned-"))
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ["HPCVIZ_HOME"] = str(home / "hpcviz")

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness

    from prefect_hpcviz.blocks import LocalDaskCluster, VizGateway
    from prefect_hpcviz.cli.services import flush_prefect_logs_and_events
    from prefect_hpcviz.flows import regenerate_canned
    from prefect_hpcviz.viz.datasets import write_synthetic
    from prefect_hpcviz.viz.gateway import EmbeddedGateway

    shape = (args.size,) * 3
    lines = ["visualizations:"]
    for n in range(args.entries):
        write_synthetic(home / "runs" / f"run{n}", shape=shape, steps=args.steps)
        lines += [
            f"  - name: Run {n}",
            f"    source: {home / 'runs' / f'run{n}' / 'simulation.pvd'}",
            "    recipe: {steps: [{coarsen: {factor: 2}}, {contour: {field: pressure, values: [0.5]}}, {slice: {normal: z}}]}",
            "    view: {camera: iso, field: pressure, colormap: coolwarm}",
            "    thumbnails: [[320, 200], [640, 400]]",
        ]
    catalog = home / "catalog.yaml"
    catalog.write_text("\n".join(lines) + "\n")

    def reduce_runs(flow_run_id) -> int:
        import asyncio

        async def read():
            async with get_client() as client:
                runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            return sum(r.name.startswith("reduce ") and r.state.name == "Completed" for r in runs)

        return asyncio.run(read())

    rows = []
    with prefect_test_harness(server_startup_timeout=120), EmbeddedGateway() as gateway:
        block = VizGateway(url=gateway.url, admin_token=gateway.admin_token)

        def run(label: str) -> None:
            started = time.perf_counter()
            state = regenerate_canned(str(catalog), out_dir=str(home / "canned"), gateway=block,
                                      cluster=LocalDaskCluster(n_workers=args.workers, threads_per_worker=1),
                                      return_state=True)
            seconds = time.perf_counter() - started
            assert state.is_completed(), state.message
            rows.append((label, seconds, reduce_runs(state.state_details.flow_run_id)))

        run(f"first run: {args.entries} entries reduced (baseline)")
        run("unchanged inputs: nothing reduced, no Dask cluster")
        piece = sorted((home / "runs" / "run0").glob("*.vti"))[-1]
        os.utime(piece, ns=(piece.stat().st_atime_ns, piece.stat().st_mtime_ns + 10**9))
        run("one input touched: only its entry reduced")
        flush_prefect_logs_and_events()

    base = rows[0][1]
    print(f"\n{args.entries} entries, each {args.size}³ × {args.steps} steps, {args.workers} Dask workers\n")
    print("| run | seconds | reductions run | vs. first run |")
    print("| --- | ---: | ---: | ---: |")
    for label, seconds, reduced in rows:
        print(f"| {label} | {seconds:.2f} | {reduced} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
