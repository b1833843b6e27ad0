"""``hpcviz deploy``: create the work pool and the deployments of prefect.yaml on a running Prefect server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from prefect_hpcviz.viz.errors import InputError, LaunchError

PREFECT_YAML = Path(__file__).with_name("prefect.yaml")
"""The deployments file shipped with the package."""

DEPLOYMENTS = ("regenerate-canned/nightly", "cull-idle-sessions/every-5-minutes")
"""``flow name/deployment name`` of what :func:`deploy` creates."""


def deploy(
    catalog: str | os.PathLike,
    gateway_block: str,
    *,
    pool: str = "hpcviz-process",
    prefect_file: str | os.PathLike | None = None,
    api_url: str | None = None,
) -> list[str]:
    """Create the ``process`` work pool (if missing) and every deployment of ``prefect_file``.

    Runs ``prefect --no-prompt deploy --all --prefect-file FILE`` with
    ``HPCVIZ_CATALOG``, ``HPCVIZ_GATEWAY_BLOCK`` and ``HPCVIZ_WORK_POOL`` set,
    so what is deployed is exactly what ``prefect deploy`` would deploy by hand.

    Args:
        catalog: the catalog YAML the nightly run regenerates (must exist).
        gateway_block: the name of a saved ``VizGateway`` block.
        pool: the work pool (type ``process``) the runs go to.
        prefect_file: the prefect.yaml to deploy (the packaged one by default).
        api_url: the Prefect API (default: ``PREFECT_API_URL`` / the active profile).

    Returns:
        The deployments created, ``flow/deployment``.

    Raises:
        InputError: the catalog is missing or not valid.
        LaunchError: ``prefect deploy`` failed (its output is in the message).

    Example:
        >>> deploy("/etc/hpcviz/catalog.yaml", "site-gateway")
        ['regenerate-canned/nightly', 'cull-idle-sessions/every-5-minutes']
    """
    from prefect_hpcviz.viz.catalog import load_catalog

    catalog = Path(catalog).expanduser().resolve()
    load_catalog(catalog)  # a bad catalog stops here, not at 02:00
    prefect_file = Path(prefect_file or PREFECT_YAML).resolve()
    if not gateway_block:
        raise InputError("--gateway-block", "is empty", "give the name of a saved VizGateway block")
    env = {**os.environ, "HPCVIZ_CATALOG": str(catalog), "HPCVIZ_GATEWAY_BLOCK": gateway_block,
           "HPCVIZ_WORK_POOL": pool}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    asyncio.run(_ensure_process_pool(pool, api_url))
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path(prefect_file).parent)
    if done.returncode != 0:
        raise LaunchError(f"prefect deploy failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return list(DEPLOYMENTS)


async def _ensure_process_pool(pool: str, api_url: str | None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: api_url} if api_url else {}
    with temporary_settings(updates=updates):
        async with get_client() as client:
            try:
                existing = await client.read_work_pool(pool)
            except ObjectNotFound:
                try:
                    await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
                except ObjectAlreadyExists:
                    pass
                return
            if existing.type != "process":
                raise InputError(f"work pool {pool!r}", f"is of type {existing.type!r}, not 'process'",
                                 "pass --pool with another name, or delete that pool")
