"""Atomic file output: a reader sees the old file or the new one, never half of one."""

import io
import os
import tempfile

import numpy as np

__all__ = ["write_atomic", "save_npy"]


def write_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` through a temporary file in the same folder.

    The temporary file is renamed over ``path`` only once it is complete and flushed to disk;
    on any failure it is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def save_npy(path, array):
    """Save ``array`` as a ``.npy`` file, atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    write_atomic(path, buffer.getvalue())
