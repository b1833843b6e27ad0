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
from prefect_hpcviz.viz.gateway.allocator import keep_freed_memory
from prefect_hpcviz.viz.gateway.app import RedactingAccessLogger, create_app
from prefect_hpcviz.viz.gateway.config import GatewayConfig, read_config_file


def run_gateway(config: GatewayConfig) -> None:
    """Serve until SIGINT/SIGTERM. Viz servers keep running; a restart picks them up.

    Example:
        >>> # run_gateway(GatewayConfig(host="0.0.0.0", port=8765,
        >>> #                           public_url="https://viz.example.org"))
    """
    keep_freed_memory()  # the gateway process is the proxy's own: large buffers stay mapped (allocator.py)
    _run(_serve(config))


def _run(main) -> None:
    """``asyncio.run`` on uvloop's event loop when uvloop is installed (it proxies faster), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


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


# option dest -> GatewayConfig field, for options whose names differ
_FIELD_OF = {
    "link_ttl": "link_ttl_s",
    "idle_timeout": "idle_timeout_s",
    "launch_timeout": "launch_timeout_s",
    "max_lifetime": "max_lifetime_s",
    "reap_interval": "reap_interval_s",
    "trusted_proxy": "trusted_proxies",
    "allowed_origin": "allowed_origins",
}


def config_from_args(argv: Sequence[str] | None = None) -> GatewayConfig:
    """Parse ``hpcviz gateway`` options (and ``--config FILE``) into a GatewayConfig.

    Settings come from the defaults, then the config file, then the options
    given on the command line (each overrides the one before).

    Example:
        >>> config_from_args(["--port", "9000", "--state-dir", "/tmp/gw"]).port
        9000
    """
    p = argparse.ArgumentParser(
        prog="hpcviz gateway",
        description=(
            "Run the hpcviz gateway: it registers visualizations, trades signed links for "
            "cookies, starts a viz server on the first click and proxies it under /s/<id>/. "
            "Viz servers keep running across a gateway restart; the new gateway picks them up. "
            "GET /healthz reports the registry and session counts (no authentication); "
            "GET /metrics serves Prometheus metrics."
        ),
        argument_default=argparse.SUPPRESS,  # only options given on the command line override the file
    )
    p.add_argument("--config", metavar="FILE", help="YAML (.yaml/.yml) or TOML (.toml) file of settings; keys are GatewayConfig field names (host, port, public_url, state_dir, idle_timeout_s, max_lifetime_s, metrics_public, ...); options given here override it")
    p.add_argument("--host", help="interface to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, help="port to listen on (default: 8765)")
    p.add_argument("--public-url", metavar="URL", help="URL browsers reach the gateway at, e.g. https://viz.example.org behind a TLS proxy; links are built from it (default: http://HOST:PORT)")
    p.add_argument("--internal-url", metavar="URL", help="URL viz server jobs report readiness to; an address compute nodes can reach (default: http://127.0.0.1:PORT)")
    p.add_argument("--state-dir", metavar="DIR", help="SQLite registry, signing key, admin token and job logs (default: $HPCVIZ_HOME/gateway)")
    p.add_argument("--link-ttl", type=float, metavar="S", help="lifetime of a shared link in seconds (default: 7 days)")
    p.add_argument("--idle-timeout", type=float, metavar="S", help="stop a session with no traffic for S seconds (default: 900)")
    p.add_argument("--max-lifetime", type=float, metavar="S", help="stop a session S seconds after its launch, busy or not; its page says so and offers to start again (default: no limit)")
    p.add_argument("--reap-interval", type=float, metavar="S", help="reconcile the registry with the launchers' jobs every S seconds, stopping jobs no active session has (one squeue per Slurm launcher; default: 60)")
    p.add_argument("--launch-timeout", type=float, metavar="S", help="a server not ready S seconds after launch has failed (default: 120)")
    p.add_argument("--allowed-backend-hosts", metavar="REGEX", help="hosts a viz server may report; the proxy connects nowhere else (default: loopback only)")
    p.add_argument("--launcher", metavar="JSON", help='launcher for registrations that name none, e.g. {"kind": "local", "options": {}}')
    p.add_argument("--trusted-proxy", action="append", metavar="CIDR", help="address or CIDR of a reverse proxy in front (repeat for several); only from these are --user-header and X-Forwarded-Proto believed")
    p.add_argument("--user-header", metavar="NAME", help="single sign-on: the header your authenticating proxy sets to the signed-in user, e.g. X-Forwarded-User (oauth2-proxy) or X-Auth-Request-User; sessions then belong to that user and others get 403; needs --trusted-proxy")
    p.add_argument("--allowed-origin", action="append", metavar="ORIGIN", help="another origin (e.g. https://portal.example.org) whose pages may open websockets through the gateway; the public URL's origin always may")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, help="log one line per request (link tokens redacted); off by default: it costs about 20 us of every proxied request")
    p.add_argument("--metrics-public", action=argparse.BooleanOptionalAction, help="serve /metrics without authentication (for a Prometheus on a trusted network); by default /metrics needs 'Authorization: Bearer <admin token>' like the REST API")
    args = vars(p.parse_args(argv))
    settings = read_config_file(args.pop("config")) if "config" in args else {}
    if "launcher" in args:
        try:
            settings["default_launcher"] = json.loads(args.pop("launcher"))
        except json.JSONDecodeError as exc:
            raise InputError("--launcher", f"is not JSON ({exc.msg})", 'give e.g. {"kind": "local", "options": {}}') from None
    for dest, value in args.items():
        settings[_FIELD_OF.get(dest, dest)] = value
    return GatewayConfig(**settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse options, run the gateway, print errors a user can act on."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(argv)
        logging.getLogger("aiohttp.access").setLevel(logging.INFO if config.access_log else logging.WARNING)
        run_gateway(config)
    except HpcvizError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
