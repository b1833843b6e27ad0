"""Launcher blocks: where the gateway starts a visualization's server."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field


class LocalLauncher(Block):
    """Start viz servers as processes on the gateway's own machine.

    The gateway runs ``python -m prefect_hpcviz.viz.serve`` when someone opens
    the link, and stops it when the session has been idle for the gateway's
    idle limit (``hpcviz gateway --idle-timeout``).

    Example:
        >>> visualize_simulation("run/output.pvd", launcher=LocalLauncher(workdir="/scratch/viz-logs"))
    """

    _block_type_name = "Local Launcher"
    _description = "Start visualization servers as local processes on the gateway's machine."
    _documentation_url = "https://github.com/prefect-hpcviz/prefect-hpcviz#blocks"

    workdir: str | None = Field(
        default=None, description="Folder for server logs; the gateway's state folder when empty."
    )
    command: list[str] | None = Field(
        default=None,
        description=(
            "Custom server command, a list of words; the gateway fills in {python}, {app}, "
            "{data}, {report_url}, {idle_timeout}, {session_id} and {viz_id}. The session key "
            "is never a placeholder: the server finds it in HPCVIZ_SESSION_KEY."
        ),
    )

    def launcher_spec(self) -> dict[str, Any]:
        """What the gateway needs to start servers this way (sent at registration)."""
        options = self.model_dump(include={"workdir", "command"})
        return {"kind": "local", "options": {k: v for k, v in options.items() if v is not None}}
