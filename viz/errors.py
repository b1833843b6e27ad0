"""Errors a user can act on.

Every message names the input, says what is wrong and what to do, so the CLI
can print it as it is and exit non-zero.
"""

from __future__ import annotations


class HpcvizError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(HpcvizError, ValueError):
    """Bad user input: a path, a file, a field name, a recipe, an option.

    Example:
        >>> raise InputError("sim/out.pvd", "no such file", "check the path")
        Traceback (most recent call last):
        ...
        prefect_hpcviz.viz.errors.InputError: sim/out.pvd: no such file. Check the path.
    """

    def __init__(self, input: str, problem: str, fix: str) -> None:
        self.input = str(input)
        self.problem = problem
        self.fix = fix
        fix = fix[:1].upper() + fix[1:]
        super().__init__(f"{self.input}: {problem}. {fix.rstrip('.')}.")

    def __reduce__(self):  # keeps the type across Dask worker processes
        return (type(self), (self.input, self.problem, self.fix))


class LaunchError(HpcvizError, RuntimeError):
    """A viz server could not be started or did not become ready."""
