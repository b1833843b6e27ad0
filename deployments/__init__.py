"""Schedules for canned visualizations and session culling (``prefect.yaml``) and the code that deploys them.

Example::

    from prefect_hpcviz.deployments import deploy

    deploy(catalog="/etc/hpcviz/catalog.yaml", gateway_block="site-gateway")
"""

from prefect_hpcviz.deployments.deploy import DEPLOYMENTS, PREFECT_YAML, deploy

__all__ = ["DEPLOYMENTS", "PREFECT_YAML", "deploy"]
