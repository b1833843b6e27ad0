"""The gateway: the one public door to viz servers on compute nodes.

It registers visualizations and hands out signed, expiring links; trades a
link for a cookie; starts a viz server job on the first click (local process,
Slurm, Azure Batch: see :mod:`prefect_hpcviz.viz.backends`); proxies HTTP and
websockets to it; and stops it when nobody uses it.

Run one::

    hpcviz gateway --public-url https://viz.example.org      # or run_gateway(GatewayConfig(...))

or embed one (demo, notebook, tests)::

    from prefect_hpcviz.viz.gateway import EmbeddedGateway

    with EmbeddedGateway() as gateway:
        reg = gateway.client().register("/scratch/run1/reduced", title="run 1")
        print(reg.link)

Talk to a running one::

    from prefect_hpcviz.viz.gateway import GatewayClient
    GatewayClient("https://viz.example.org", token).register(...)
"""

from prefect_hpcviz.viz.gateway.app import create_app
from prefect_hpcviz.viz.gateway.client import GatewayClient, GatewayError, Registration
from prefect_hpcviz.viz.gateway.config import GatewayConfig
from prefect_hpcviz.viz.gateway.embedded import EmbeddedGateway
from prefect_hpcviz.viz.gateway.launch import render_command
from prefect_hpcviz.viz.gateway.run import run_gateway

__all__ = [
    "EmbeddedGateway",
    "GatewayClient",
    "GatewayConfig",
    "GatewayError",
    "Registration",
    "create_app",
    "render_command",
    "run_gateway",
]
