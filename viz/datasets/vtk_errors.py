"""Catch VTK's error events instead of letting them print.

VTK readers report problems by printing an error and returning an empty or
partial output. :class:`ErrorCollector` is attached to a reader (and its XML
parser and executive, where it has them) so every error event is kept, not
printed, and the caller can raise an InputError naming the file.

Example:
    >>> from vtkmodules.vtkIOXML import vtkXMLImageDataReader
    >>> reader, errors = vtkXMLImageDataReader(), ErrorCollector()
    >>> errors.attach(reader)
    >>> reader.SetFileName("/nonexistent.vti")
    >>> ok = reader.Update()
    >>> errors.first()
    'Error opening file /nonexistent.vti'

"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from vtkmodules.util.misc import calldata_type
from vtkmodules.util.vtkConstants import VTK_STRING
from vtkmodules.vtkCommonCore import vtkObject, vtkOutputWindow, vtkStringOutputWindow


class ErrorCollector:
    """Receives VTK error events (as a vtkCommand) so that none is printed."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._sink = vtkObject()
        tag = self._sink.AddObserver("ErrorEvent", self._on_error)
        self.command = self._sink.GetCommand(tag)

    @calldata_type(VTK_STRING)
    def _on_error(self, caller, event, message) -> None:  # noqa: ARG002 (VTK signature)
        self.messages.append(clean_vtk_message(message))

    def attach(self, reader) -> None:
        """Collect the errors of ``reader``, its executive and (XML readers) its parser."""
        if hasattr(reader, "SetReaderErrorObserver"):
            reader.SetReaderErrorObserver(self.command)
            reader.SetParserErrorObserver(self.command)
        reader.AddObserver("ErrorEvent", self._on_error)
        reader.GetExecutive().AddObserver("ErrorEvent", self._on_error)

    def first(self) -> str:
        """The first message, or ''."""
        return self.messages[0] if self.messages else ""


def clean_vtk_message(message: str | None) -> str:
    """VTK's 'ERROR: In file, line N\\nvtkClass (0x..): text' -> 'text' (first line).

    Example:
        >>> clean_vtk_message("ERROR: In a.cxx, line 3\\nvtkX (0x1f): Cannot open file")
        'Cannot open file'
    """
    text = str(message or "").strip()
    text = re.sub(r"^ERROR: In .*?, line \d+\s*", "", text)
    text = re.sub(r"^\w+ \(0x[0-9a-fA-F]+\): ", "", text)
    return text.splitlines()[0].strip() if text else ""


@contextlib.contextmanager
def captured_vtk_output() -> Iterator[list[str]]:
    """Collect what VTK prints through its output window (errors of reader internals) meanwhile.

    Some readers (OpenFOAM's) report from private helper objects that no
    observer can reach. While this context is active VTK's global output
    window writes to a string; the cleaned messages are in the yielded list
    when the block ends. Not thread-aware: messages of other threads' VTK
    calls in that time are collected too.

    Example:
        >>> with captured_vtk_output() as messages:
        ...     vtkObject().InvokeEvent("ErrorEvent")  # doctest: +SKIP
    """
    window = vtkStringOutputWindow()
    previous = vtkOutputWindow.GetInstance()
    previous.Register(None)  # keep it alive while it is not the instance
    vtkOutputWindow.SetInstance(window)
    messages: list[str] = []
    try:
        yield messages
    finally:
        vtkOutputWindow.SetInstance(previous)
        previous.UnRegister(None)
        text = window.GetOutput() or ""
        for chunk in re.split(r"\n(?=ERROR: |Warning: |Generic Warning: )|\n{2,}", text):
            if chunk.strip().startswith("ERROR"):
                messages.append(clean_vtk_message(chunk))
