"""Data safety shared by every command: outputs never land on inputs, files appear whole or
not at all, and Ctrl-C / SIGTERM never leave half a file behind.

- ``check_output_path(out, inputs)``: refuse an output that is, or lies inside, an input
  (real paths, so links and ``..`` do not fool it), and one whose location is not writable.
  Call it before any work starts.
- ``atomic_save_paddle(obj, path)``: ``paddle.save`` into a temporary file in the same
  folder, fsync, then ``os.replace``: a reader sees the old file or the new one, never a
  half-written one (checkpoints, optimizer state, exported models).
- ``deferred_interrupts()``: a block during which SIGINT / SIGTERM are held back; they are
  raised as ``KeyboardInterrupt`` when the block ends, so a checkpoint write always completes.
- ``Interrupted``: raised by long commands on Ctrl-C with the one line to print (for example
  "interrupted in epoch 37; resume with ... --resume"); ``runtime.run_cli`` prints it and
  exits 130.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["Interrupted", "check_output_path", "check_writable", "atomic_file", "atomic_save_paddle", "fsync_replace", "set_aside",
           "deferred_interrupts", "with_path", "make_parent"]


_held: list[list[int]] = []   # signals received by the outermost deferred_interrupts block in force


class Interrupted(Exception):
    """A long command stopped by SIGINT/SIGTERM; ``str(exc)`` is the one line for the user."""


def with_path(exc: OSError, path: str | os.PathLike) -> OSError:
    """``exc`` as an ``OSError`` of the same errno (and subclass) that names ``path`` (the file
    the user asked for, not a hidden temporary name); ``runtime.run_cli`` prints it as one line."""
    if exc.errno is None:
        return OSError(f"{path}: {exc}")
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(path))


def make_parent(path: str | os.PathLike) -> None:
    """Create the folder of ``path`` (and its parents); an existing *file* on the way is a
    ``NotADirectoryError`` naming it, not Python's bare "File exists"."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        blocker = next((a for a in (parent, *parent.parents) if a.exists() and not a.is_dir()), parent)
        raise NotADirectoryError(errno.ENOTDIR, f"cannot create a folder here: {blocker} is a file",
                                 os.fspath(path)) from None


def _real(p: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(p))))


def _inside(a: Path, b: Path) -> bool:
    """True when ``a`` is ``b`` or lies below it."""
    return a == b or b in a.parents


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Raise ``ValueError`` unless ``path`` (a file or folder, existing or not) can be written:
    its nearest existing ancestor must be a writable folder."""
    p = _real(path)
    probe = p
    while not probe.exists():
        probe = probe.parent
    if p.exists() and not p.is_dir():
        probe = p.parent
    if not probe.is_dir():
        raise ValueError(f"{what} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: cannot write in {probe} (permission denied or read-only)")
    return p


def check_output_path(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                      what: str = "output") -> Path:
    """Refuse ``out`` when it is, or lies inside, one of ``inputs`` (``None`` entries are
    skipped), or is not writable. Returns the resolved output path.

    Raises ``ValueError`` with both paths named.
    """
    o = _real(out)
    for i in inputs:
        if i is None:
            continue
        r = _real(i)
        if _inside(o, r) or (o.exists() and r.exists() and os.path.samefile(o, r)):   # hard links too
            raise ValueError(f"{what} {out} is, or lies inside, the input {i}: choose another {what} "
                             "(the kit never writes onto its inputs)")
    return check_writable(out, what)


def set_aside(folder: str | os.PathLike) -> Path:
    """Rename ``folder`` to ``<folder>.old-<YYYYmmdd-HHMMSS>[-n]`` beside it (never deletes; an
    earlier run kept this way can be looked at or renamed back); returns the new path."""
    import time

    folder = Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = folder.with_name(f"{folder.name}.old-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f"{folder.name}.old-{stamp}-{n}")
    folder.rename(aside)
    return aside


def _file_mode() -> int:
    """The mode ``open()`` gives a new file here (0o666 less the umask); mkstemp's files are 0o600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def fsync_replace(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsync ``tmp`` and ``os.replace`` it onto ``path`` (then fsync the folder, where possible).
    The file gets the mode a plain ``open()`` would give it (temporary files are private)."""
    with open(tmp, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())
    with contextlib.suppress(OSError):
        os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, sources: tuple = ()) -> Iterator[str]:
    """The one way the kit writes a file: the block writes the temporary file it is given (in
    ``path``'s folder, created if needed); when the block succeeds, the file is fsynced and
    ``os.replace``d onto ``path`` (``fsync_replace``), so readers see the old file or the new
    one. An ``OSError`` (full disk, read-only folder) is re-raised naming ``path``, except one
    naming a file of ``sources`` (an input being read), which passes unchanged. The temporary
    file never stays behind."""
    path = Path(path)
    tmp = None
    try:
        make_parent(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield tmp
        fsync_replace(tmp, path)
    except OSError as exc:   # name the file the user knows, not the hidden temporary one
        if exc.filename is not None and os.fspath(exc.filename) in {os.fspath(s) for s in sources}:
            raise
        raise with_path(exc, path) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_save_paddle(obj, path: str | os.PathLike) -> Path:
    """``paddle.save(obj, path)`` through ``atomic_file``: all or nothing; a signal during the
    write and the rename waits for both."""
    import paddle

    with deferred_interrupts(), atomic_file(path) as tmp:
        paddle.save(obj, tmp)
    return Path(path)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the duration of the block, then raise ``KeyboardInterrupt``
    if one arrived. Blocks nest: an inner block (e.g. one ``atomic_save_paddle`` of a checkpoint
    set written inside an outer block) leaves the signal to the outermost one, so the whole set
    is written before it is raised. Outside the main thread (where handlers cannot be set) it
    does nothing."""
    if threading.current_thread() is not threading.main_thread() or _held:
        yield
        return
    received: list[int] = []

    def hold(signum, _frame):
        received.append(signum)

    old = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    _held.append(received)
    try:
        yield
    finally:
        _held.pop()
        for s, h in old.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)   # None: a handler set outside Python
    if received:
        raise KeyboardInterrupt(f"signal {received[0]}")
