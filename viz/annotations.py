"""The text over the 3D view: the time label and the colour legend.

Both stay inside the picture at any size the views and thumbnails use. Font
sizes scale with the image (with its square root: text shrinks slower than
the picture), from 8 px in a 160 x 100 thumbnail up to 14 px from 640 x 400
on (the explorer's window is larger). The time label hangs from the
top-left corner and the field's name from the top-right; the colour bar
stands under the name against the right edge, with its labels right-aligned
on its left, so however long a label is, it grows into the picture and never
past an edge. Every piece is placed here, none is left to a widget's own
layout rules, and a window the browser resizes is laid out again for its new
size. A picture too small to hold the text legibly gets none rather than cut
text.

Example:
    >>> annotations = ViewAnnotations(plotter, lookup_table)
    >>> annotations.update(title="pressure", time="t = 0.5")
    >>> annotations.set_visible(False)   # the scene alone
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyvista as pv
from vtkmodules.vtkRenderingCore import vtkActor2D, vtkCoordinate, vtkPolyDataMapper2D, vtkTextActor

TIME_COLOR = (0.85, 0.9, 0.97)
LEGEND_COLOR = (1.0, 1.0, 1.0)

_FULL_SIZE = (640, 400)
"""Image size from which the text has its full size."""
_FONT_RANGE = (8, 14)
"""Smallest and largest font size in pixels (VTK renders at 72 dpi: 1 pt is 1 px)."""
_TEXT_HEIGHT = 1.0
"""Height of a line of text per font pixel (VTK's Arial measures 0.93)."""
_WIDEST_LABEL = 6
"""Width of the widest label in font pixels: "-1.23e+04", nine characters of about 0.6 em."""
_MAX_LABELS = 5
_BAR_COLORS = 256


@dataclass(frozen=True)
class AnnotationLayout:
    """Where the text over a view of one size goes, in pixels from the lower left.

    Attributes:
        width, height: the image size.
        font: size of the time label and of the field's name.
        label_font: size of the colour bar's labels.
        margin: the gap between any text and the image's edges.
        bar: the colour bar's rectangle (x, y, width, height).
        label_gap: between the labels' right ends and the bar.
        labels: how many labels the bar carries (evenly spaced, both ends).
        fits: whether the annotations fit at all; they are hidden when not.

    Example:
        >>> layout = AnnotationLayout.for_size(320, 200)
        >>> layout.font, layout.label_font, layout.margin, layout.labels
        (10, 9, 5, 5)
    """

    width: int
    height: int
    font: int
    label_font: int
    margin: int
    bar: tuple[int, int, int, int]
    label_gap: int
    labels: int
    fits: bool

    @classmethod
    def for_size(cls, width: int, height: int) -> AnnotationLayout:
        """The layout for an image of ``width`` x ``height`` pixels.

        Example:
            >>> AnnotationLayout.for_size(1024, 768).font
            14
        """
        smallest, largest = _FONT_RANGE
        scale = min(width / _FULL_SIZE[0], height / _FULL_SIZE[1])
        font = min(largest, max(smallest, round(largest * math.sqrt(scale))))  # shrinks slower than the picture
        label_font = max(smallest, round(font * 6 / 7))  # 12 px beside 14
        margin = max(3, round(font / 2))
        line = math.ceil(font * _TEXT_HEIGHT)
        half_label = math.ceil(label_font * _TEXT_HEIGHT / 2)  # a label is centred on its value

        thickness = max(4, round(0.9 * label_font))
        top = height - margin - line - margin - half_label  # under the field's name
        bottom = max(round(0.1 * height), margin + half_label)
        bar = (width - margin - thickness, bottom, thickness, max(0, top - bottom))
        label_gap = max(2, label_font // 3)
        labels = min(_MAX_LABELS, bar[3] // (4 * half_label) + 1)  # a free line between labels
        wide_enough = width >= 2 * margin + _WIDEST_LABEL * label_font + label_gap + thickness
        return cls(width, height, font, label_font, margin, bar, label_gap, labels, labels >= 2 and wide_enough)


class ViewAnnotations:
    """The time label and the colour legend of one plotter, placed by ``AnnotationLayout``.

    The colour bar shows the lookup table's colours over its scalar range;
    ``update`` rereads both.

    Attributes:
        time_label: the ``vtkTextActor`` of the time.
        title: the ``vtkTextActor`` of the field's name.
        bar: the ``vtkActor2D`` of the colour bar.
        labels: the ``vtkTextActor`` of each value label, lowest first.
        layout: the ``AnnotationLayout`` in use.

    Example:
        >>> annotations = ViewAnnotations(plotter, scene.lut)
        >>> annotations.update(title="velocity", time="t = 2")
    """

    def __init__(self, plotter: pv.Plotter, lookup_table: pv.LookupTable) -> None:
        self.lookup_table = lookup_table
        self.time_label = _text_actor(TIME_COLOR, justify="left", vertical="top")
        self.title = _text_actor(LEGEND_COLOR, justify="right", vertical="top")
        self.labels = [_text_actor(LEGEND_COLOR, justify="right", vertical="centered") for _ in range(_MAX_LABELS)]
        self._bar_mesh = pv.PolyData()
        self.bar = _bar_actor(self._bar_mesh, lookup_table)
        self._visible = True
        self._legend = True
        self.fit(plotter.window_size)
        named = {"time": self.time_label, "title": self.title, "colour_bar": self.bar}
        named |= {f"colour_bar_label:{i}": label for i, label in enumerate(self.labels)}
        for name, actor in named.items():
            plotter.add_actor(actor, reset_camera=False, name=name, pickable=False, render=False)
        plotter.ren_win.AddObserver("WindowResizeEvent", lambda window, _event: self.fit(window.GetSize()))

    def fit(self, size: tuple[int, int] | list[int]) -> None:
        """Lay the annotations out for an image of ``size`` (width, height) pixels.

        Example:
            >>> annotations.fit((320, 200))
        """
        width, height = (int(v) for v in size)
        layout = self.layout = AnnotationLayout.for_size(width, height)
        top = 1.0 - layout.margin / height
        for actor, x in ((self.time_label, layout.margin), (self.title, width - layout.margin)):
            actor.GetTextProperty().SetFontSize(layout.font)
            actor.SetPosition(x / width, top)

        # The bar: a column of quads, one per colour, from the lowest value up.
        x, y, w, h = layout.bar
        rows = np.linspace(y, y + h, _BAR_COLORS + 1) / height
        left = np.column_stack([np.full_like(rows, x / width), rows, np.zeros_like(rows)])
        right = left + [w / width, 0.0, 0.0]
        n = rows.size
        self._bar_mesh.points = np.vstack([left, right])
        self._bar_mesh.faces = np.array([(4, i, i + 1, n + i + 1, n + i) for i in range(_BAR_COLORS)]).ravel()

        spacing = h / max(1, layout.labels - 1)
        for i, label in enumerate(self.labels):
            label.GetTextProperty().SetFontSize(layout.label_font)
            label.SetPosition((x - layout.label_gap) / width, (y + i * spacing) / height)
        self._refresh()

    def update(self, *, title: str | None, time: str, legend: bool = True) -> None:
        """Show another field name and time, and the lookup table's current range.

        Args:
            title: the field's name, shown over the colour bar.
            time: the time label's text.
            legend: False hides the colour legend (no field to colour by).

        Example:
            >>> annotations.update(title="pressure", time="t = 0.5")
        """
        self.title.SetInput(title or "")
        self.time_label.SetInput(time)
        self._legend = legend
        self._refresh()

    def set_visible(self, visible: bool) -> None:
        """Show or hide all annotations (the scene alone when False).

        Example:
            >>> annotations.set_visible(False)
        """
        self._visible = bool(visible)
        self._refresh()

    def _refresh(self) -> None:
        lo, hi = self.lookup_table.scalar_range
        count = self.layout.labels
        self._bar_mesh.cell_data.set_scalars(np.linspace(lo, hi, _BAR_COLORS), "value")
        for i, label in enumerate(self.labels):
            value = lo + (hi - lo) * i / (count - 1) if count > 1 else lo
            label.SetInput(f"{value:.3g}")

        shown = self._visible and self.layout.fits
        legend = shown and self._legend
        self.time_label.SetVisibility(shown)
        for actor in (self.title, self.bar):
            actor.SetVisibility(legend)
        for i, label in enumerate(self.labels):
            label.SetVisibility(legend and i < count)


def _text_actor(color: tuple[float, float, float], *, justify: str, vertical: str) -> vtkTextActor:
    """A text actor anchored at its position by ``justify`` (left | right) and ``vertical`` (top | centered)."""
    actor = vtkTextActor()
    actor.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
    prop = actor.GetTextProperty()
    prop.SetColor(color)
    prop.SetFontFamilyToArial()
    prop.ShadowOff()
    if justify == "right":
        prop.SetJustificationToRight()
    else:
        prop.SetJustificationToLeft()
    if vertical == "top":
        prop.SetVerticalJustificationToTop()
    else:
        prop.SetVerticalJustificationToCentered()
    return actor


def _bar_actor(mesh: pv.PolyData, lookup_table: pv.LookupTable) -> vtkActor2D:
    """A 2D actor drawing ``mesh`` (points in viewport fractions) coloured through ``lookup_table``."""
    viewport = vtkCoordinate()
    viewport.SetCoordinateSystemToNormalizedViewport()
    mapper = vtkPolyDataMapper2D()
    mapper.SetInputData(mesh)
    mapper.SetTransformCoordinate(viewport)
    mapper.SetLookupTable(lookup_table)
    mapper.UseLookupTableScalarRangeOn()
    mapper.SetScalarModeToUseCellData()
    actor = vtkActor2D()
    actor.SetMapper(mapper)
    return actor
