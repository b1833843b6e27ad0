"""Turn a chunk that does not decode into an InputError naming the file, the field and the chunk.

Compressed chunks (Zarr, NetCDF-4/HDF5, VTKHDF) fail to decode with codec
errors that name neither the store nor the variable ("Error -3 while
decompressing data", "Unexpected end of data", ...). :class:`NamedDecodeErrors`
wraps anything indexable (a lazily loaded xarray DataArray, an h5py
dataset) so that a failed read of one box says which input, which field and
which region to look at. It is what dask arrays over stored volumes are
built on, so the error surfaces the same way on a Dask worker.

Example:
    >>> import numpy as np
    >>> NamedDecodeErrors(np.arange(6.0).reshape(2, 3), "a.zarr", "p")[1, :2]
    array([3., 4.])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError

FIX = "the data is damaged: restore it from a copy or rewrite it"


def describe_index(index: Any, shape: tuple[int, ...], dims: tuple[str, ...] | None = None) -> str:
    """``z 0:64, y 64:128, x 0:256`` for an index into an array of ``shape`` (dimension names if known).

    Example:
        >>> describe_index((slice(0, 4), 2), (8, 6, 5), ("z", "y", "x"))
        'z 0:4, y 2, x 0:5'
        >>> describe_index(..., (8, 6))
        'axis 0 0:8, axis 1 0:6'
    """
    index = index if isinstance(index, tuple) else (index,)
    if any(item is Ellipsis for item in index):
        at = next(i for i, item in enumerate(index) if item is Ellipsis)
        index = index[:at] + (slice(None),) * (len(shape) - len(index) + 1) + index[at + 1:]
    index = index + (slice(None),) * (len(shape) - len(index))
    parts = []
    for axis, item in enumerate(index):
        if isinstance(item, slice):
            start, stop, _ = item.indices(shape[axis])
            text = f"{start}:{stop}"
        else:
            text = str(item)
        name = dims[axis] if dims and axis < len(dims) else f"axis {axis}"
        parts.append(f"{name} {text}")
    return ", ".join(parts)


def decode_error(source: str, field: str, where: str, exc: BaseException) -> InputError:
    """The InputError for a region of ``field`` in ``source`` that could not be read."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputError(source, f"field {field!r}: a chunk in [{where}] does not decode "
                      f"({type(exc).__name__}: {detail})", FIX)


class NamedDecodeErrors:
    """An indexable array whose read failures become :func:`decode_error` InputErrors.

    Picklable when the wrapped array is (xarray lazily loaded arrays and the
    readers in this package are), so dask can ship it to workers.
    """

    def __init__(self, array: Any, source: str, field: str, dims: tuple[str, ...] | None = None) -> None:
        self.array = array
        self.source = source
        self.field = field
        self.dims = dims
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        try:
            box = self.array[index]
            return np.asarray(getattr(box, "values", box))
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - codecs raise anything; all mean "does not decode"
            raise decode_error(self.source, self.field, describe_index(index, self.shape, self.dims), exc) from exc
