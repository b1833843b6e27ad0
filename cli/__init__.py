"""The `hpcviz` command: demo, visualize, reduce, gateway, serve."""

from prefect_hpcviz.cli.main import main

__all__ = ["main"]
