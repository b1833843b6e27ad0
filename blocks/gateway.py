"""The gateway block: where visualizations are registered and links come from."""

from __future__ import annotations

import os

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.gateway.client import GatewayClient


class VizGateway(Block):
    """A running hpcviz gateway, reached with its admin token.

    ``hpcviz demo`` and ``hpcviz visualize`` start one embedded and export
    ``HPCVIZ_GATEWAY_URL`` / ``HPCVIZ_GATEWAY_TOKEN``; :meth:`from_env` reads
    them, so flows run inside those commands need no block at all.

    Example:
        >>> VizGateway(url="https://viz.example.org", admin_token="...").save("site-gateway")
        >>> visualize_simulation("run/output.pvd", gateway=VizGateway.load("site-gateway"))
    """

    _block_type_name = "Viz Gateway"
    _description = "An hpcviz gateway: registers visualizations and hands out signed links."
    _documentation_url = "https://github.com/prefect-hpcviz/prefect-hpcviz#blocks"

    url: str = Field(description="The gateway's URL as this flow reaches it, e.g. http://login1:8950.")
    admin_token: SecretStr = Field(description="The gateway's admin token (hpcviz gateway prints where it is).")

    @classmethod
    def from_env(cls) -> VizGateway:
        """The gateway named by HPCVIZ_GATEWAY_URL and HPCVIZ_GATEWAY_TOKEN."""
        url = os.environ.get("HPCVIZ_GATEWAY_URL")
        token = os.environ.get("HPCVIZ_GATEWAY_TOKEN")
        if not url or not token:
            raise InputError(
                "gateway",
                "no gateway given and HPCVIZ_GATEWAY_URL / HPCVIZ_GATEWAY_TOKEN are not set",
                "pass gateway=VizGateway(url=..., admin_token=...) or VizGateway.load(NAME), "
                "or run the flow through `hpcviz visualize`, which starts one",
            )
        return cls(url=url, admin_token=token)

    def get_client(self) -> GatewayClient:
        """A client for the gateway's REST API."""
        return GatewayClient(self.url, self.admin_token.get_secret_value())
