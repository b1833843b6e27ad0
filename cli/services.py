"""Start what a visualization needs on this machine, run the flow, serve until Ctrl-C.

`hpcviz demo` and `hpcviz visualize` share this: a local Prefect server
(unless PREFECT_API_URL names one), the embedded gateway (unless
HPCVIZ_GATEWAY_URL names one), the `visualize_simulation` flow, and the two
URLs a person needs, each on its own line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prefect_hpcviz.cli.prefect_server import LocalPrefectServer, port_is_free
from prefect_hpcviz.viz.errors import InputError
from prefect_hpcviz.viz.paths import hpcviz_home


@dataclass
class RunOptions:
    """Options shared by `hpcviz demo` and `hpcviz visualize`."""

    recipe: str | None = None
    title: str | None = None
    out_dir: str | None = None
    workers: int | None = None
    warm: bool = False
    prefect_port: int = 4200
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8765
    public_url: str | None = None
    idle_timeout_s: int = 300
    serve: bool = True


@dataclass
class Outcome:
    """What a run printed: the flow run's page and the 3D-view link."""

    flow_run_url: str
    link: str
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def prefect_api(options: RunOptions) -> Iterator[tuple[str, str]]:
    """(api_url, ui_url) of the Prefect server to use; starts a local one if none is configured."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        ui = os.environ.get("PREFECT_UI_URL") or configured.rstrip("/").removesuffix("/api")
        yield configured, ui
        return
    server = LocalPrefectServer(hpcviz_home() / "prefect", port=options.prefect_port).start()
    try:
        server.wait_ready()
        yield server.api_url, server.ui_url
    finally:
        server.stop()


@contextlib.contextmanager
def gateway_endpoint(options: RunOptions) -> Iterator[tuple[str, str]]:
    """(url, admin_token) of the gateway to use; starts the embedded one if none is configured."""
    url, token = os.environ.get("HPCVIZ_GATEWAY_URL"), os.environ.get("HPCVIZ_GATEWAY_TOKEN")
    if url and token:
        yield url, token
        return
    from prefect_hpcviz.viz.gateway import EmbeddedGateway, GatewayConfig

    config = GatewayConfig(
        host=options.gateway_host,
        port=options.gateway_port,
        public_url=options.public_url,
        state_dir=hpcviz_home() / "gateway",
        idle_timeout_s=options.idle_timeout_s,
    )
    with EmbeddedGateway(config) as gateway:
        yield gateway.url, gateway.admin_token


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM, handled so that cleanup always finishes.

    The first signal interrupts the work in progress (``interrupting``) or
    ends serving; later ones only say that cleanup is under way, so a second
    Ctrl-C never cuts shutdown short and leaves servers behind.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.interrupting = True

    def __call__(self, *_: object) -> None:
        if self.event.is_set():
            print("Still stopping the servers this command started…", flush=True)
            return
        self.event.set()
        if self.interrupting:
            raise KeyboardInterrupt

    def wait(self) -> None:
        """Serve until the first signal."""
        self.interrupting = False
        while not self.event.wait(0.5):
            pass


@contextlib.contextmanager
def ctrl_c_stops() -> Iterator[StopRequest]:
    """Install a StopRequest for SIGINT and SIGTERM until the block (and its cleanup) ends."""
    request = StopRequest()
    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def flush_prefect_logs_and_events(timeout_s: float = 10) -> None:
    """Send queued logs and events to the API now, while the server still runs.

    Prefect drains these queues at interpreter exit; by then a local server
    this command started is gone and the drain would wait on it.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    def drain() -> None:  # in a thread of its own: drain_all only blocks where no event loop runs
        for worker in (APILogWorker, EventsWorker):
            worker.drain_all(timeout=timeout_s)

    thread = threading.Thread(target=drain, name="hpcviz-flush-prefect", daemon=True)
    thread.start()
    thread.join(2 * timeout_s + 1)


def check_ports_free(options: RunOptions) -> None:
    """Fail at once, before anything starts, when a port this run needs is taken."""
    wanted = []
    if not os.environ.get("PREFECT_API_URL"):
        wanted.append(("127.0.0.1", options.prefect_port, "--prefect-port", "the local Prefect server"))
    if not (os.environ.get("HPCVIZ_GATEWAY_URL") and os.environ.get("HPCVIZ_GATEWAY_TOKEN")):
        wanted.append((options.gateway_host, options.gateway_port, "--gateway-port", "the embedded gateway"))
    for host, port, option, what in wanted:
        if port and not port_is_free(host, port):
            raise InputError(
                f"port {port}",
                f"is in use, so {what} cannot listen there",
                f"pass {option} with a free port, or stop the program that listens on {host}:{port}",
            )


def run_visualization(
    source: str | Callable[[], str],
    options: RunOptions,
    *,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """Bring up Prefect and the gateway, run the flow, print the URLs, serve.

    ``source`` may be a callable (the demo's data generator): it runs while
    the Prefect server starts, so the two waits overlap.
    """
    check_ports_free(options)
    with ctrl_c_stops() as stop, ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future[str] = pool.submit(source) if callable(source) else _done(source)
        with prefect_api(options) as (api_url, ui_url), gateway_endpoint(options) as (gw_url, gw_token):
            try:
                outcome = _run_flow(pending.result(), options, api_url, ui_url, gw_url, gw_token)
            finally:
                flush_prefect_logs_and_events()
            print("Flow run in the Prefect UI:", flush=True)
            print(outcome.flow_run_url, flush=True)
            print("3D view (open it in a browser):", flush=True)
            print(outcome.link, flush=True)
            if on_outcome:
                on_outcome(outcome)
            if options.serve:
                print("Serving until Ctrl-C.", flush=True)
                stop.wait()
            print("Stopping…", flush=True)
    return outcome


def _done(value: str) -> Future[str]:
    future: Future[str] = Future()
    future.set_result(value)
    return future


def _run_flow(source: str, options: RunOptions, api_url: str, ui_url: str, gw_url: str, gw_token: str) -> Outcome:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from prefect_hpcviz.blocks import LocalDaskCluster, LocalLauncher, VizGateway
    from prefect_hpcviz.flows import visualize_simulation

    import distributed  # noqa: F401  (configures its loggers on import)

    # After Prefect and Dask configured logging: the flow's own log says what matters.
    logging.getLogger("distributed").setLevel(logging.WARNING)

    with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_UI_URL: ui_url}):
        state = visualize_simulation(
            source,
            recipe=options.recipe,
            title=options.title,
            out_dir=options.out_dir,
            cluster=LocalDaskCluster(n_workers=options.workers),
            launcher=LocalLauncher(),
            gateway=VizGateway(url=gw_url, admin_token=gw_token),
            warm=options.warm,
            return_state=True,
        )
        flow_run_url = f"{ui_url}/runs/flow-run/{state.state_details.flow_run_id}"
        if not state.is_completed():
            print("The flow run failed; its page says why:", file=sys.stderr)
            print(flow_run_url, file=sys.stderr)
        publication = state.result()
    return Outcome(flow_run_url=flow_run_url, link=publication.link, extra={"publication": publication})
