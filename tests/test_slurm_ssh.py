"""SlurmBackend over ssh: a local sshd (Debian openssh-server, key auth on 127.0.0.1) as the command
node, a dead one listed first to prove fail-over, and an sshd that goes away and comes back."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_hpcviz.viz.backends import JobSpec, JobState
from prefect_hpcviz.viz.backends.slurm import SlurmBackend
from tests.conftest import require
from tests.helpers import free_port

pytestmark = pytest.mark.slurm
SSHD = Path("/usr/sbin/sshd")


class LocalSshd:
    """sshd on 127.0.0.1:PORT accepting one generated key; restartable on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.client_key = folder / "id_ed25519"
        host_key = folder / "host_ed25519"
        for key in (self.client_key, host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (folder / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        (folder / "authorized_keys").chmod(0o600)
        self.known_hosts = folder / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {Path(f'{host_key}.pub').read_text()}")
        self.config = folder / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
            "AcceptEnv none\nPrintMotd no\nLogLevel ERROR\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        self.process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(self.config)],
            stdout=open(self.folder / "sshd.log", "ab"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, (self.folder / "sshd.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "sshd did not listen within 20 s"
                time.sleep(0.05)  # poll interval, not a readiness guess

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def backend_options(self) -> dict:
        return {
            "ssh_identity_file": str(self.client_key),
            "ssh_options": [f"UserKnownHostsFile={self.known_hosts}", "StrictHostKeyChecking=yes"],
            "connect_timeout_s": 3,
        }


@pytest.fixture
def sshd(tmp_path, slurm_cluster):
    require(SSHD.exists() and shutil.which("ssh") is not None, "sshd and ssh", "apt-get install openssh-server (scripts/setup.sh does)")
    folder = tmp_path / "sshd"
    folder.mkdir(mode=0o700)
    server = LocalSshd(folder)
    server.start()
    yield server
    server.stop()


async def _wait(backend, job_id, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate(status := await backend.state(job_id)):
        assert time.monotonic() < deadline, f"job {job_id} still {status}"
        await asyncio.sleep(0.1)
    return status


async def test_over_ssh_a_dead_command_node_is_skipped_and_a_lost_one_is_waited_for(sshd, slurm_cluster, tmp_path):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    live = f"127.0.0.1:{sshd.port}"
    workdir = tmp_path / "jobs"
    backend = SlurmBackend(workdir=str(workdir), partition=slurm_cluster["partition"], memory="256M", walltime="5",
                           command_nodes=[dead, live], **sshd.backend_options())
    code = "import os, time; print('key length', len(os.environ['HPCVIZ_SESSION_KEY']), flush=True); time.sleep(300)"
    job = await backend.submit(JobSpec("hpcviz-ssh", [sys.executable, "-c", code], env={"HPCVIZ_SESSION_KEY": "k" * 40}))
    assert backend.runner.hosts[backend.runner._preferred] == live, "the node that answered is used from then on"
    running = await _wait(backend, job, lambda s: s.state is JobState.RUNNING)
    assert running.node == slurm_cluster["node"]
    deadline = time.monotonic() + 30
    while "key length 40" not in await backend.logs(job):  # read over ssh
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)

    # The only live command node goes away: the state stays what it was, no error, no failure.
    sshd.stop()
    started = time.monotonic()
    assert (await backend.state(job)).state is JobState.RUNNING
    assert time.monotonic() - started < 20, "retries back off but do not hang"
    assert job in subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    sshd.start()
    assert (await backend.state(job)).state is JobState.RUNNING

    await backend.stop(job)
    assert job not in subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert (await backend.state(job)).reason == "stopped on request"


def test_through_the_gateway_a_session_survives_its_command_node_going_away(sshd, slurm_cluster, small_reduced, tmp_path):
    import httpx

    from prefect_hpcviz.viz.gateway import EmbeddedGateway

    options = {"partition": slurm_cluster["partition"], "workdir": str(tmp_path / "jobs"), "memory": "1G",
               "walltime": "10", "serve_host": "127.0.0.1",
               "command_nodes": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{sshd.port}"], **sshd.backend_options()}
    with EmbeddedGateway(state_dir=tmp_path / "gateway", poll_interval_s=0.5) as gateway, gateway.client() as client:
        admin = httpx.Client(base_url=gateway.local_url, trust_env=False, timeout=60,
                             headers={"Authorization": f"Bearer {gateway.admin_token}"})
        reg = client.register(str(small_reduced.path), launcher={"kind": "slurm", "options": options}, warm=True)
        deadline = time.monotonic() + 120
        while (session := client.get(reg.id)["session"])["state"] != "ready":
            assert session["state"] in ("queued", "starting"), session
            assert time.monotonic() < deadline, session
            time.sleep(0.2)

        sshd.stop()  # the only live command node is gone: Slurm cannot be asked
        for _ in range(3):  # three culling passes, each asking (and retrying) over ssh
            assert admin.post("/api/cull").json()["stopped"] == []
        assert client.get(reg.id)["session"]["state"] == "ready", "an unreachable Slurm ends no session"
        sshd.start()
        stopped = admin.post(f"/api/sessions/{session['id']}/stop").json()
        assert stopped["state"] == "stopped"
        queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        assert session["job_id"] not in queue
