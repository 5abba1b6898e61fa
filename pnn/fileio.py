"""Writing result files so that a reader sees the old file or the whole new one, never a part.

:func:`atomic_write_bytes` / :func:`atomic_write_text` write the data to a new temporary file in
the destination's directory, flush it to disk, rename it over the destination (``os.replace``,
atomic on POSIX and Windows within one file system) and flush the directory entry.

The temporary file is created with :func:`tempfile.mkstemp`: a random name, opened with
``O_CREAT | O_EXCL``, so it is always a new file owned by us. A file or symlink that someone placed
at a predictable name (``<path>.tmp``) is never opened, followed or overwritten. If ``path``
itself is a symlink, the link is replaced by the new file; its target is not written through.

An existing destination keeps its permission bits; a new one gets the usual ``0o666 & ~umask``.
On any error the temporary file is removed and the destination is left as it was.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text"]


def _umask() -> int:
    """The process umask, read without changing it where possible (``/proc`` on Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable: flush the directory entry (not possible on Windows)."""
    if os.name == "nt":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (see the module docstring).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: when ``data`` is not bytes-like.
        FileNotFoundError: when the destination's directory does not exist.
        OSError: when writing, flushing or renaming fails (``path`` is then unchanged and no
            temporary file is left behind).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes: data must be bytes, got {type(data).__name__}; "
                        f"use atomic_write_text for str")
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: its directory {str(directory)!r} "
                                f"does not exist; create it first (e.g. mkdir -p)")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)  # follows a symlink: keep what readers saw
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if hasattr(os, "fchmod"):  # mkstemp creates 0o600
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and durably (see :func:`atomic_write_bytes`).

    The text is encoded as given (no newline translation), ``utf-8`` unless ``encoding`` says
    otherwise.

    Raises:
        TypeError: when ``text`` is not a str. Otherwise as :func:`atomic_write_bytes`.
    """
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text: text must be str, got {type(text).__name__}; "
                        f"use atomic_write_bytes for bytes")
    return atomic_write_bytes(path, text.encode(encoding))
