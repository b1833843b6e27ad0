"""Flow: ask the gateway to stop idle viz sessions now, and report what it stopped.

The gateway culls on its own every few seconds; this flow makes the sweep
visible in Prefect (scheduled every few minutes by deployments/prefect.yaml)
with a table artifact ``hpcviz-culled-sessions`` of the sessions it ended and why.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from prefect_hpcviz.blocks import VizGateway
from prefect_hpcviz.flows.canned import resolve_gateway

CULLED_KEY = "hpcviz-culled-sessions"


@task(name="cull-sessions", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def cull_sessions(gateway: VizGateway) -> list[dict]:
    """``POST /api/cull``: the sessions the gateway stopped in this pass."""
    with gateway.get_client() as client:
        return client.cull()


@flow(name="cull-idle-sessions")
def cull_idle_sessions(gateway: VizGateway | str | None = None) -> list[dict]:
    """Stop idle (and too old) viz sessions now; publish a table of what was stopped.

    Args:
        gateway: a VizGateway block, the name of a saved one, or None for
            ``HPCVIZ_GATEWAY_URL`` / ``HPCVIZ_GATEWAY_TOKEN``.

    Returns:
        One dict per stopped session (``id``, ``viz_id``, ``reason``, ...).

    Example:
        >>> stopped = cull_idle_sessions("site-gateway")
        >>> [s["reason"] for s in stopped]
        ['stopped after 15 min without activity']
    """
    stopped = cull_sessions(resolve_gateway(gateway))
    rows = [
        {"session": s["id"], "visualization": s["viz_id"], "state": s["state"], "reason": s.get("reason") or ""}
        for s in stopped
    ]
    create_table_artifact(
        rows or [{"session": "", "visualization": "", "state": "", "reason": "nothing to stop"}],
        key=CULLED_KEY,
        description=f"Viz sessions stopped by this sweep: {len(rows)}",
    )
    get_run_logger().info("stopped %d session(s)%s", len(rows),
                          "".join(f"\n  {r['session']} ({r['visualization']}): {r['reason']}" for r in rows))
    return stopped
