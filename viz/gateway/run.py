"""Run the gateway as a server: ``hpcviz gateway`` and ``python -m prefect_hpcviz.viz.gateway``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from prefect_hpcviz.viz.errors import HpcvizError, InputError
from prefect_hpcviz.viz.gateway.app import RedactingAccessLogger, create_app
from prefect_hpcviz.viz.gateway.config import LOOPBACK_HOSTS, GatewayConfig
from prefect_hpcviz.viz.paths import hpcviz_home


def run_gateway(config: GatewayConfig) -> None:
    """Serve until SIGINT/SIGTERM. Viz servers keep running; a restart picks them up.

    Example:
        >>> # run_gateway(GatewayConfig(host="0.0.0.0", port=8765,
        >>> #                           public_url="https://viz.example.org"))
    """
    asyncio.run(_serve(config))


async def _serve(config: GatewayConfig) -> None:
    app = create_app(config)
    runner = web.AppRunner(app, shutdown_timeout=5.0, access_log_class=RedactingAccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    print(
        f"hpcviz gateway on http://{config.host}:{config.port} (public URL {config.public_base})", flush=True
    )
    print(f"admin token: {config.state_dir / 'admin_token'}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def config_from_args(argv: Sequence[str] | None = None) -> GatewayConfig:
    """Parse ``hpcviz gateway`` options into a GatewayConfig.

    Example:
        >>> config_from_args(["--port", "9000", "--state-dir", "/tmp/gw"]).port
        9000
    """
    p = argparse.ArgumentParser(
        prog="hpcviz gateway",
        description=(
            "Run the hpcviz gateway: it registers visualizations, trades signed links for "
            "cookies, starts a viz server on the first click and proxies it under /s/<id>/. "
            "Viz servers keep running across a gateway restart; the new gateway picks them up."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default: 8765)")
    p.add_argument("--public-url", metavar="URL", help="URL browsers reach the gateway at, e.g. https://viz.example.org behind a TLS proxy; links are built from it (default: http://HOST:PORT)")
    p.add_argument("--internal-url", metavar="URL", help="URL viz server jobs report readiness to; an address compute nodes can reach (default: http://127.0.0.1:PORT)")
    p.add_argument("--state-dir", default=str(hpcviz_home() / "gateway"), metavar="DIR", help="SQLite registry, signing key, admin token and job logs (default: $HPCVIZ_HOME/gateway)")
    p.add_argument("--link-ttl", type=float, default=7 * 24 * 3600, metavar="S", help="lifetime of a shared link in seconds (default: 7 days)")
    p.add_argument("--idle-timeout", type=float, default=900.0, metavar="S", help="stop a session with no traffic for S seconds (default: 900)")
    p.add_argument("--launch-timeout", type=float, default=120.0, metavar="S", help="a server not ready S seconds after launch has failed (default: 120)")
    p.add_argument("--allowed-backend-hosts", default=LOOPBACK_HOSTS, metavar="REGEX", help="hosts a viz server may report; the proxy connects nowhere else (default: loopback only)")
    p.add_argument("--launcher", default=None, metavar="JSON", help='launcher for registrations that name none, e.g. {"kind": "local", "options": {}}')
    args = p.parse_args(argv)
    extra = {}
    if args.launcher:
        try:
            extra["default_launcher"] = json.loads(args.launcher)
        except json.JSONDecodeError as exc:
            raise InputError("--launcher", f"is not JSON ({exc.msg})", 'give e.g. {"kind": "local", "options": {}}') from None
    return GatewayConfig(
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        internal_url=args.internal_url,
        state_dir=args.state_dir,
        link_ttl_s=args.link_ttl,
        idle_timeout_s=args.idle_timeout,
        launch_timeout_s=args.launch_timeout,
        allowed_backend_hosts=args.allowed_backend_hosts,
        **extra,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse options, run the gateway, print errors a user can act on."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_gateway(config_from_args(argv))
    except HpcvizError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
