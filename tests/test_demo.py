"""`hpcviz demo`, the README's first command: it prints the flow run's page and
the 3D-view link on their own lines, serves until Ctrl-C, then stops every
server it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import psutil

from tests.helpers import free_port


def test_demo_prints_both_urls_serves_them_and_stops_everything_on_ctrl_c(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"PREFECT_API_URL", "HPCVIZ_GATEWAY_URL", "HPCVIZ_GATEWAY_TOKEN"}}
    env["HPCVIZ_HOME"] = str(tmp_path)
    prefect_port, gateway_port = free_port(), free_port()
    log = tmp_path / "demo.log"
    demo = subprocess.Popen(
        [sys.executable, "-m", "prefect_hpcviz.cli", "demo", "--size", "32", "--steps", "2", "--workers", "1",
         "--prefect-port", str(prefect_port), "--gateway-port", str(gateway_port)],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while "Serving until Ctrl-C." not in log.read_text():
            assert demo.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo never started serving"
            time.sleep(0.2)
        lines = log.read_text().splitlines()
        flow_run_url = next(line for line in lines if re.fullmatch(rf"http://127\.0\.0\.1:{prefect_port}/runs/flow-run/[0-9a-f-]+", line))
        link = next(line for line in lines if re.fullmatch(rf"http://127\.0\.0\.1:{gateway_port}/v/\S+\?token=\S+", line))

        flow_run_id = flow_run_url.rsplit("/", 1)[1]
        api = f"http://127.0.0.1:{prefect_port}/api"
        assert httpx.get(f"{api}/flow_runs/{flow_run_id}").json()["state"]["type"] == "COMPLETED"
        page = httpx.get(flow_run_url, headers={"Accept": "text/html"})  # the UI serves its app to browsers
        assert page.status_code == 200 and "<html" in page.text.lower(), "the Prefect UI answers at the printed address"
        opened = httpx.get(link, follow_redirects=False)
        assert opened.status_code == 303 and "set-cookie" in opened.headers

        started = {p.pid for p in psutil.Process(demo.pid).children(recursive=True)}
        listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert {prefect_port, gateway_port} <= listening
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert "Stopping" in log.read_text()
    still_running = [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert still_running == [], "every server the demo started has stopped"
    listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert not {prefect_port, gateway_port} & listening
