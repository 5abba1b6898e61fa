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

:func:`atomic_savefig` renders a matplotlib figure in memory and writes it the same way.
:func:`check_writable` checks an output location before a run starts (its folder exists and
takes a new file, or can be created; the target is no directory and no symlink), so that a long
run does not fail only when it writes its result.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_savefig", "check_writable",
           "OutputPathError"]


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
        OutputPathError: (a ``ValueError``) when ``path`` exists and is neither a regular file,
            a symlink nor a directory (a device such as ``/dev/null``, a FIFO, a socket): it is
            refused, never replaced.
        TypeError: when ``data`` is not bytes-like.
        FileNotFoundError: when the destination's directory does not exist.
        OSError: when writing, flushing or renaming fails (``path`` is then unchanged and no
            temporary file is left behind).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes: data must be bytes, got {type(data).__name__}; "
                        f"use atomic_write_text for str")
    path = Path(path)
    kind = _special_kind(path)
    if kind is not None and kind != "a directory":  # a directory: the rename fails (OSError)
        raise OutputPathError(f"cannot write {str(path)!r}: it is {kind}, not a regular file, "
                              f"and would be replaced by one; give the path of a regular file "
                              f"(new or existing)")
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


def atomic_savefig(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Save a matplotlib figure to ``path`` through :func:`atomic_write_bytes`.

    The figure is rendered into memory first (``fig.savefig`` to a buffer, the format taken from
    ``path``'s suffix unless ``format=`` is given), so matplotlib never opens ``path`` itself: a
    symlink at ``path`` or at any predictable temporary name is never followed.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: when the suffix names no format matplotlib can write (and no ``format=``).
        As :func:`atomic_write_bytes` otherwise.
    """
    path = Path(path)
    fmt = savefig_kwargs.pop("format", None) or path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"cannot save a figure to {str(path)!r}: no file suffix to tell the "
                         f"format; use e.g. {path.name}.png or pass format='png'")
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"cannot save a figure to {str(path)!r}: format {fmt!r} is not one "
                         f"matplotlib writes ({', '.join(sorted(supported))}); change the suffix")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **savefig_kwargs)
    return atomic_write_bytes(path, buf.getvalue())


class OutputPathError(ValueError):
    """An output location that cannot be written (raised by :func:`check_writable`)."""


def _probe_directory(directory: Path) -> str | None:
    """Why a file cannot be created in the existing directory ``directory`` (``None``: it can).

    Creates and removes a temporary file (the way :func:`atomic_write_bytes` will), so read-only
    file systems, ACLs and permissions all count, for any user including root."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pnn-probe.", suffix=".tmp", dir=directory)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass
    return None


def _special_kind(path: Path) -> str | None:
    """What ``path`` is when it exists and is neither a regular file nor a symlink (``"a
    FIFO"``, ``"a character device"``, ...); ``None`` otherwise."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return None
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def check_writable(path: str | os.PathLike, *, folder: bool = False, what: str = "output",
                   files: tuple[str, ...] | list[str] = ()) -> Path:
    """Check, before any work starts, that ``path`` can be written; change nothing.

    A file (``folder=False``): ``path`` must not be a directory nor a symlink (the writer would
    replace the link, not write where it points) nor any other non-regular file (a device such as
    ``/dev/null``, a FIFO: the writer would replace it), and its directory must exist and be writable,
    or be creatable: its nearest existing ancestor is a writable directory.

    A folder (``folder=True``): ``path`` must be a directory (a symlink to one is fine) in which
    a file can be created, or not exist and be creatable; each name in ``files`` (what will be
    written into it) must not be a directory, a symlink or another non-regular file there.

    ``what`` names the option in messages (e.g. ``"--out"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputPathError: (a ``ValueError``) saying which path, why, and how to fix it.
    """
    path = Path(path)

    def refuse(why: str, fix: str) -> OutputPathError:
        return OutputPathError(f"{what} {str(path)!r}: {why}; {fix}")

    if folder:
        if path.is_dir():
            why = _probe_directory(path)
            if why is not None:
                raise refuse(f"cannot create files in this folder ({why})",
                             "choose a folder you can write to, or fix its permissions")
            for name in files:
                f = path / name
                if f.is_symlink():
                    raise refuse(f"{name} in it is a symlink (to {os.readlink(f)!r}), which "
                                 f"would be replaced", "remove the link or choose another folder")
                if f.is_dir():
                    raise refuse(f"{name} in it is a directory, where a file will be written",
                                 "remove or rename that directory, or choose another folder")
                kind = _special_kind(f)
                if kind is not None:
                    raise refuse(f"{name} in it is {kind}, not a regular file, and would be "
                                 f"replaced by one", "remove it or choose another folder")
            return path
        if path.exists() or path.is_symlink():
            kind = ("a dangling symlink" if not path.exists() else
                    f"{_special_kind(path) or 'a file'}, not a folder")
            raise refuse(f"is {kind}", "give a folder (new or existing)")
        _check_creatable(path, refuse)
        return path
    if path.is_symlink():
        raise refuse(f"is a symlink (to {os.readlink(path)!r}); the file would replace the "
                     f"link, not be written where it points",
                     "give the real path, or remove the link")
    if path.is_dir():
        raise refuse("is a directory, a file was expected",
                     f"give a file name, e.g. {str(path / 'result.json')!r}")
    kind = _special_kind(path)
    if kind is not None:
        raise refuse(f"is {kind}, not a regular file, and would be replaced by one",
                     "give the path of a regular file (new or existing)")
    _check_creatable(path, refuse)
    return path


def _check_creatable(path: Path, refuse) -> None:
    """``path``'s directory exists and is writable, or its nearest existing ancestor is a
    writable directory (so the missing folders can be made)."""
    parent = path.parent
    missing = []
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise refuse(f"{str(parent)!r} is not a directory (a file or a dangling symlink is in "
                     f"the way)", "choose a path below a directory")
    why = _probe_directory(parent)
    if why is not None:
        where = (f"its folder {str(parent)!r}" if not missing else
                 f"{str(missing[-1])!r} cannot be created in {str(parent)!r}")
        raise refuse(f"{where}: cannot create files there ({why})",
                     "choose a location you can write to, or fix the permissions")
