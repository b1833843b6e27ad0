"""``python -m prefect_hpcviz.viz.gateway [options]``: run the gateway (see ``run.py``)."""

import sys

from prefect_hpcviz.viz.gateway.run import config_from_args, main, run_gateway

__all__ = ["config_from_args", "main", "run_gateway"]

if __name__ == "__main__":
    sys.exit(main())
