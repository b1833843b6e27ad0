"""prefect-hpcviz: from simulation output to a clickable, proxied 3D view.

The engine lives in :mod:`prefect_hpcviz.viz` (no Prefect import); Prefect
tasks, flows and blocks wrap it in :mod:`~prefect_hpcviz.tasks`,
:mod:`~prefect_hpcviz.flows` and :mod:`~prefect_hpcviz.blocks`.
"""

__version__ = "0.1.0"
