"""The one way backends shell out: run a command, raise with everything on failure.

Slurm's ``sbatch``/``squeue``/``scancel`` (locally or over ssh) all go
through :func:`run_command`, so a failure always says which command ran, how
it exited and what it printed.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prefect_hpcviz.viz.errors import LaunchError


@dataclass
class CommandResult:
    """What a finished command printed and how it exited."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str


class CommandError(LaunchError):
    """A backend command failed or timed out; the message holds all we know."""

    def __init__(self, result: CommandResult, problem: str, fix: str) -> None:
        self.result = result
        cmd = shlex.join(result.command)
        lines = [f"{cmd}: {problem} (exit code {result.returncode}). {fix}"]
        if result.stdout.strip():
            lines.append(f"stdout: {result.stdout.strip()[-2000:]}")
        if result.stderr.strip():
            lines.append(f"stderr: {result.stderr.strip()[-2000:]}")
        super().__init__("\n".join(lines))


async def run_command(
    command: Sequence[str],
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 60.0,
    check: bool = True,
) -> CommandResult:
    """Run ``command`` without a shell and return its output.

    Args:
        command: program and arguments (no shell, so no quoting surprises).
        input: text written to the command's stdin (e.g. a job script).
        env: extra environment variables on top of ``os.environ``.
        timeout: seconds before the command is killed and CommandError raised.
        check: raise CommandError when the exit code is not 0.

    Raises:
        CommandError: the command is missing, exited non-zero or timed out.

    Example:
        >>> import asyncio
        >>> asyncio.run(run_command(["echo", "hi"])).stdout
        'hi\\n'
    """
    argv = [str(part) for part in command]
    full_env = {**os.environ, **(env or {})}
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
        )
    except (FileNotFoundError, PermissionError) as exc:
        result = CommandResult(argv, 127, "", str(exc))
        raise CommandError(result, "cannot run the program", "Install it or put it on PATH") from exc
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(input.encode() if input is not None else None), timeout
        )
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        result = CommandResult(
            argv, proc.returncode or -9, out.decode(errors="replace"), err.decode(errors="replace")
        )
        raise CommandError(
            result, f"no answer within {timeout:g} s", "Check that the service it talks to is up"
        ) from None
    result = CommandResult(
        argv, proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )
    if check and result.returncode != 0:
        raise CommandError(result, "failed", "See its output below")
    return result
