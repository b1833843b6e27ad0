"""`hpcviz`: one command per thing a person does.

    hpcviz demo                           synthetic simulation -> flow -> link; serves until Ctrl-C
    hpcviz visualize SOURCE [--recipe R]  the same for your data
    hpcviz reduce SOURCE --recipe R --out DIR [--workers N]   the reduction alone, prints a summary
    hpcviz gateway [options]              run the gateway
    hpcviz serve --app A --data D         what a viz server job runs on the compute node
    hpcviz deploy --catalog C --gateway-block G   nightly canned views + culling on a Prefect server
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from prefect_hpcviz.viz.errors import HpcvizError

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("what runs where")
    run.add_argument("--recipe", metavar="FILE", help="reduction recipe (YAML); a default that keeps the volume small when omitted")
    run.add_argument("--title", help="title shown in the Prefect UI and the app (default: the file name)")
    run.add_argument("--out", dest="out_dir", metavar="DIR", help="where reduced data goes (default: $HPCVIZ_HOME/reduced, HPCVIZ_HOME=~/.hpcviz)")
    run.add_argument("--workers", type=int, metavar="N", help="Dask worker processes for the reduction (default: one per core)")
    run.add_argument("--warm", action="store_true", help="start the viz server now instead of when the link is first opened")
    run.add_argument("--idle-timeout", dest="idle_timeout_s", type=int, default=300, metavar="S", help="stop a viz server nobody has used for S seconds (default: 300)")
    run.add_argument("--no-serve", dest="serve", action="store_false", help="exit after printing the URLs instead of serving until Ctrl-C (stops the servers this command started)")
    ports = parser.add_argument_group("local services (used unless PREFECT_API_URL / HPCVIZ_GATEWAY_URL name running ones)")
    ports.add_argument("--prefect-port", type=int, default=4200, metavar="PORT", help="port of the local Prefect server and UI (default: 4200)")
    ports.add_argument("--gateway-host", default="127.0.0.1", metavar="HOST", help="address the embedded gateway binds (default: 127.0.0.1)")
    ports.add_argument("--gateway-port", type=int, default=8765, metavar="PORT", help="port of the embedded gateway (default: 8765)")
    ports.add_argument("--public-url", metavar="URL", help="the gateway's URL as browsers reach it, if not http://HOST:PORT (e.g. behind a TLS proxy)")


def _run_options(args: argparse.Namespace):
    from prefect_hpcviz.cli.services import RunOptions

    names = RunOptions.__dataclass_fields__
    return RunOptions(**{k: v for k, v in vars(args).items() if k in names})


def cmd_demo(args: argparse.Namespace) -> int:
    from prefect_hpcviz.cli.services import run_visualization
    from prefect_hpcviz.viz.datasets import write_synthetic
    from prefect_hpcviz.viz.paths import hpcviz_home

    shape = (args.size,) * 3
    options = _run_options(args)
    options.title = options.title or f"Synthetic simulation {args.size}³ × {args.steps} steps"

    def generate() -> str:
        return str(write_synthetic(hpcviz_home() / "demo" / f"sim-{args.size}-{args.steps}", shape=shape, steps=args.steps))

    run_visualization(generate, options)
    return 0


def cmd_visualize(args: argparse.Namespace) -> int:
    from prefect_hpcviz.cli.preflight import check_inputs
    from prefect_hpcviz.cli.services import run_visualization

    check_inputs(args.source, args.recipe)
    run_visualization(args.source, _run_options(args))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from prefect_hpcviz.deployments import deploy

    created = deploy(args.catalog, args.gateway_block, pool=args.pool, prefect_file=args.prefect_file)
    print("Created on the Prefect server: " + ", ".join(created), flush=True)
    print(f"Start a worker where the data and the gateway are reachable:\n  prefect worker start --pool {args.pool}",
          flush=True)
    return 0


def _passthrough(command: str, argv: list[str]) -> int:
    """`hpcviz gateway ...` and `hpcviz serve ...` are the engine's own commands."""
    try:
        if command == "gateway":
            from prefect_hpcviz.viz.gateway.__main__ import main as gateway_main

            return int(gateway_main(argv) or 0)
        from prefect_hpcviz.viz.serve import main as serve_main

        return int(serve_main(argv) or 0)
    except HpcvizError as error:
        print(f"hpcviz {command}: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpcviz",
        description="From simulation output to a clickable 3D view in the Prefect UI.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `hpcviz COMMAND --help` for the options of each command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="generate a synthetic simulation, reduce it, publish its 3D view; serve until Ctrl-C",
        description=(
            "Generate a time-dependent 3-D simulation (pressure and velocity on a SIZE³ grid, "
            "a .pvd series of .vti files under $HPCVIZ_HOME/demo), start a local Prefect server "
            "with its UI and the embedded gateway, run the visualize-simulation flow, and print "
            "the flow run's page and the 3D-view link. Serves until Ctrl-C, then stops what it started."
        ),
    )
    demo.add_argument("--size", type=int, default=192, help="grid points along each axis (default: 192)")
    demo.add_argument("--steps", type=int, default=6, help="time steps (default: 6)")
    _add_run_options(demo)
    demo.set_defaults(func=cmd_demo)

    visualize = commands.add_parser(
        "visualize",
        help="reduce your dataset and publish its 3D view; serve until Ctrl-C",
        description=(
            "Do for SOURCE what the demo does for its synthetic data. SOURCE is a .pvd series, "
            ".vti/.vtu/.vtp/.vts, NetCDF (.nc) or Zarr (.zarr), as a path or fsspec URL. "
            "Bad input stops the command at once, before any server starts."
        ),
    )
    visualize.add_argument("source", metavar="SOURCE", help="the dataset to visualize")
    _add_run_options(visualize)
    visualize.set_defaults(func=cmd_visualize)

    from prefect_hpcviz.cli.reduce import add_parser as add_reduce_parser

    add_reduce_parser(commands)

    deploy = commands.add_parser(
        "deploy",
        help="schedule nightly canned-view regeneration and idle-session culling on a Prefect server",
        description=(
            "Create the `process` work pool (if missing) and the deployments of deployments/prefect.yaml "
            "on the Prefect server PREFECT_API_URL names: regenerate-canned/nightly (02:00 UTC) and "
            "cull-idle-sessions/every-5-minutes. Same as `prefect deploy --all --prefect-file "
            "deployments/prefect.yaml` with HPCVIZ_CATALOG, HPCVIZ_GATEWAY_BLOCK and HPCVIZ_WORK_POOL set."
        ),
    )
    deploy.add_argument("--catalog", required=True, metavar="FILE", help="the catalog of canned visualizations (YAML)")
    deploy.add_argument("--gateway-block", required=True, metavar="NAME", help="name of a saved VizGateway block")
    deploy.add_argument("--pool", default="hpcviz-process", metavar="NAME", help="process work pool (default: hpcviz-process)")
    deploy.add_argument("--prefect-file", metavar="FILE", default=None, help="another prefect.yaml (default: the packaged one)")
    deploy.set_defaults(func=cmd_deploy)

    commands.add_parser(
        "gateway",
        help="run the gateway (the one public door to viz servers)",
        add_help=False,
        description="Run the gateway. `hpcviz gateway --help` lists its options.",
    )

    commands.add_parser(
        "serve",
        help="run a viz server for one session (what a compute job runs)",
        add_help=False,
        description="Run a viz server. `hpcviz serve --help` lists its options.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hpcviz` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["gateway"], ["serve"]):  # their own parsers own every option, --help included
        return _passthrough(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HpcvizError as error:
        print(f"hpcviz: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
