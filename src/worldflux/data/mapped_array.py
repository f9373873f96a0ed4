"""``MappedArray``: a fixed-shape ``.npy`` file mapped read-write into memory.

The on-disk storage of :class:`~worldflux.data.ReplayBuffer` keeps one such file per row
field. The file is a plain ``.npy`` (``np.load(path, mmap_mode="r")`` reads it) created sparse:
its size is set with ``truncate``, so no disk block and no memory is used until a row is
written.

Pages written or read through a mapping stay resident in the process (they count in its
RSS) until they are unmapped. :meth:`MappedArray.release` writes dirty pages back
(``msync``), drops them from the process (``madvise(MADV_DONTNEED)``; the data stays in the
file) and, when asked, from the page cache too (``posix_fadvise(POSIX_FADV_DONTNEED)``), so the
process's memory does not grow with the amount of data.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from worldflux.core.errors import DataError

__all__ = ["MappedArray"]


class MappedArray:
    """A ``.npy`` file of shape ``shape`` and dtype ``dtype``, mapped read-write.

    ``array`` is an ``ndarray`` view of the file: assigning to it writes the file, fancy
    indexing it returns in-memory copies of the selected rows. Use :meth:`create` for a new
    (zero-filled, sparse) file and :meth:`open` for an existing one.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        try:
            self._mmap = mmap.mmap(self._fd, 0, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(self._fd)
            raise
        self.array: np.ndarray = np.ndarray(shape, dtype=dtype, buffer=self._mmap, offset=offset)
        self._dirty = False

    @classmethod
    def create(cls, path: str | os.PathLike, shape: tuple[int, ...], dtype: Any) -> MappedArray:
        """Write a zero-filled sparse ``.npy`` file at ``path`` (replacing one) and map it."""
        path = Path(path)
        dtype = np.dtype(dtype)
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": tuple(shape),
        }
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        with open(path, "wb") as fh:
            np.lib.format.write_array_header_2_0(fh, header)
            offset = fh.tell()
            fh.truncate(offset + nbytes)  # a hole: no block is allocated until written
        return cls(path, tuple(shape), dtype, offset)

    @classmethod
    def open(cls, path: str | os.PathLike, shape: tuple[int, ...], dtype: Any) -> MappedArray:
        """Map an existing ``.npy`` file, checking that it holds ``shape`` and ``dtype``.

        Raises:
            DataError: the file is missing, not a ``.npy`` file, or of another shape or dtype.
        """
        path = Path(path)
        dtype = np.dtype(dtype)
        if not path.is_file():
            raise DataError(f"{path}: missing replay storage file")
        try:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    header = np.lib.format.read_array_header_1_0(fh)
                else:
                    header = np.lib.format.read_array_header_2_0(fh)
                offset = fh.tell()
        except ValueError as error:
            raise DataError(f"{path}: not a readable .npy file ({error})") from error
        found_shape, fortran, found_dtype = header
        if tuple(found_shape) != tuple(shape) or found_dtype != dtype or fortran:
            raise DataError(
                f"{path}: holds an array of shape {tuple(found_shape)} and dtype {found_dtype}, "
                f"expected shape {tuple(shape)} and dtype {dtype}"
            )
        expected_size = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if path.stat().st_size != expected_size:
            raise DataError(
                f"{path}: file is {path.stat().st_size} bytes, expected {expected_size} "
                "(truncated or damaged)"
            )
        return cls(path, tuple(shape), dtype, offset)

    def mark_dirty(self) -> None:
        """Note that rows were written since the last :meth:`release` or :meth:`flush`."""
        self._dirty = True

    def flush(self) -> None:
        """Write dirty pages to the file (``msync``); nothing to do when none were written."""
        if self._dirty:
            self._mmap.flush()
            self._dirty = False

    def release(self, *, drop_cache: bool) -> None:
        """:meth:`flush`, then drop the mapped pages from the process's resident memory.

        ``drop_cache`` also asks the kernel to evict the file's clean pages from the page
        cache (freshly written data is then read back from disk when sampled).
        """
        self.flush()
        if hasattr(self._mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)
        if drop_cache and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        """Flush and unmap. ``array`` must not be used afterwards."""
        self.flush()
        self.array = np.empty((0,), dtype=self.array.dtype)
        try:
            self._mmap.close()
        except BufferError:  # a view of the mapping is still alive: it keeps the mapping
            pass
        os.close(self._fd)
