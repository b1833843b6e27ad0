"""Ready-made flows.

``visualize_simulation`` is the whole path: summarize, reduce on Dask, render a
thumbnail, register with the gateway and publish the link::

    from prefect import flow
    from prefect_hpcviz.flows import visualize_simulation

    @flow
    def nightly_run():
        output = run_solver()                   # your step, returns a path or URL
        visualize_simulation(output, recipe="recipes/overview.yaml")
"""

from prefect_hpcviz.flows.browse import browse_datasets
from prefect_hpcviz.flows.canned import regenerate_canned
from prefect_hpcviz.flows.cull import cull_idle_sessions
from prefect_hpcviz.flows.visualize import visualize_simulation

__all__ = ["browse_datasets", "cull_idle_sessions", "regenerate_canned", "visualize_simulation"]
