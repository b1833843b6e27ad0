"""Where Slurm commands run: this machine, or a login node over ssh with fail-over.

Both answer the same three calls: :meth:`run` a command, :meth:`write_file`
(mode 0600, atomically, content through stdin so it never appears on a
command line) and :meth:`tail` a file. :class:`SshCommandNodes` tries the
command nodes in order, starting with the one that answered last; a node
that does not answer (ssh's own exit status 255: unreachable, refused, timed
out) is skipped, as bwVisu does. Only when none answers is
:class:`NodesUnavailable` raised, which callers treat as transient.

Example:
    >>> import asyncio
    >>> asyncio.run(LocalCommands().run(["echo", "hi"])).stdout
    'hi\\n'
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from typing import Protocol

from prefect_hpcviz.viz.backends.commands import CommandError, CommandResult, run_command
from prefect_hpcviz.viz.errors import InputError

log = logging.getLogger(__name__)

SSH_CONNECT_FAILED = 255
"""ssh's exit status when it could not run the command at all."""

_WRITE = 'umask 077 && mkdir -p "$(dirname "$1")" && cat > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"'
_TAIL = 'test -f "$2" || exit 0; tail -n "$1" "$2"'


class NodesUnavailable(CommandError):
    """No command node answered (every ssh connection failed); worth retrying later."""


class CommandRunner(Protocol):
    """Runs Slurm's commands somewhere."""

    async def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0, check: bool = True
    ) -> CommandResult: ...

    async def write_file(self, path: str, text: str) -> None: ...

    async def tail(self, path: str, lines: int) -> str: ...


class LocalCommands:
    """Run commands on this machine (the gateway runs where sbatch works)."""

    where = "local"

    async def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0, check: bool = True
    ) -> CommandResult:
        return await run_command(argv, input=input, timeout=timeout, check=check)

    async def write_file(self, path: str, text: str) -> None:
        await self.run(["sh", "-c", _WRITE, "write", path], input=text)

    async def tail(self, path: str, lines: int) -> str:
        return (await self.run(["sh", "-c", _TAIL, "tail", str(int(lines)), path])).stdout


class SshCommandNodes:
    """Run commands on the first command node (login node) that answers, over ssh.

    Args:
        hosts: command nodes in order of preference, ``[user@]host[:port]``.
        user: login name for hosts that do not give one.
        identity_file: private key (key authentication; ssh runs with
            ``BatchMode=yes``, so it never asks for a password).
        connect_timeout_s: seconds before a node that does not answer is skipped.
        ssh_options: extra ``-o`` options, e.g. ``["UserKnownHostsFile=/etc/hpcviz/known_hosts"]``.
        ssh_config: an ssh_config file (``ssh -F``).

    Example:
        >>> nodes = SshCommandNodes(["login1.hpc.example", "login2.hpc.example:2222"], user="viz")
        >>> nodes.ssh_argv("login2.hpc.example:2222", ["squeue", "--me"])[-1]
        'squeue --me'
    """

    where = "ssh"

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        user: str | None = None,
        identity_file: str | None = None,
        connect_timeout_s: float = 5.0,
        ssh_options: Sequence[str] = (),
        ssh_config: str | None = None,
    ) -> None:
        if isinstance(hosts, str) or not hosts or not all(isinstance(h, str) and h.strip() for h in hosts):
            raise InputError(
                "command_nodes", "must be a non-empty list of host names", 'give e.g. ["login1", "login2:2222"]'
            )
        self.hosts = [h.strip() for h in hosts]
        self.user = user
        self.identity_file = identity_file
        self.connect_timeout_s = float(connect_timeout_s)
        self.ssh_options = list(ssh_options)
        self.ssh_config = ssh_config
        self._preferred = 0

    def __repr__(self) -> str:
        return f"SshCommandNodes({self.hosts!r})"

    def ssh_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """The ssh command line that runs ``argv`` on ``host`` (no secret is ever in it)."""
        target, port = host, None
        if ":" in host and not host.startswith("["):
            target, _, port = host.rpartition(":")
        if self.user and "@" not in target:
            target = f"{self.user}@{target}"
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(self.connect_timeout_s))}"]
        if self.ssh_config:
            ssh += ["-F", self.ssh_config]
        if self.identity_file:
            ssh += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        if port:
            ssh += ["-p", port]
        for option in self.ssh_options:
            ssh += ["-o", option]
        return [*ssh, target, "--", shlex.join([str(a) for a in argv])]

    async def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0, check: bool = True
    ) -> CommandResult:
        """Run ``argv`` on the first node that answers; NodesUnavailable when none does."""
        failures: list[tuple[str, CommandResult]] = []
        count = len(self.hosts)
        for step in range(count):
            index = (self._preferred + step) % count
            host = self.hosts[index]
            try:
                result = await run_command(
                    self.ssh_argv(host, argv), input=input, timeout=timeout + self.connect_timeout_s, check=False
                )
            except CommandError as exc:  # ssh missing, or the node hung past the timeout
                if exc.result.returncode == 127:
                    raise
                failures.append((host, exc.result))
                log.warning("command node %s did not answer in time; trying the next one", host)
                continue
            if result.returncode == SSH_CONNECT_FAILED:
                failures.append((host, result))
                log.warning("command node %s does not answer (%s); trying the next one", host, result.stderr.strip())
                continue
            if index != self._preferred:
                log.info("command node %s answers; using it from now on", host)
                self._preferred = index
            result.command = [str(a) for a in argv]
            if check and result.returncode != 0:
                raise CommandError(result, f"failed on {host}", "See its output below")
            return result
        detail = "; ".join(f"{h}: {(r.stderr or r.stdout).strip()[-200:]}" for h, r in failures)
        raise NodesUnavailable(
            CommandResult([str(a) for a in argv], SSH_CONNECT_FAILED, "", detail),
            f"no command node answered ({', '.join(self.hosts)})",
            "Check the nodes and the ssh key; the gateway keeps retrying",
        )

    async def write_file(self, path: str, text: str) -> None:
        await self.run(["sh", "-c", _WRITE, "write", path], input=text)

    async def tail(self, path: str, lines: int) -> str:
        return (await self.run(["sh", "-c", _TAIL, "tail", str(int(lines)), path])).stdout
