"""The visualization engine: datasets, reduction, apps, servers, gateway.

Nothing under ``viz/`` imports Prefect, so the engine runs the same in a flow,
an sbatch script or a notebook.
"""
