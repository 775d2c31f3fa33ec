"""Data safety shared by every command: outputs never land on inputs, files appear whole or
not at all, and Ctrl-C / SIGTERM never leave half a file behind.

- ``check_output_path(out, inputs)``: refuse an output that is, or lies inside, an input
  (real paths, so links and ``..`` do not fool it), and one whose location is not writable.
  Call it before any work starts.
- ``atomic_file(path)``: the one writer's recipe (a temporary file in the same folder, fsync,
  ``os.replace``): a reader sees the old file or the new one, never a half-written one.
  ``atomic_write_bytes`` / ``atomic_write_text`` / ``atomic_copy`` (files and copies) and
  ``atomic_save_paddle`` (``paddle.save``: checkpoints, optimizer state) write through it.
- ``deferred_interrupts()``: a block during which SIGINT / SIGTERM are held back; they are
  raised as ``KeyboardInterrupt`` when the block ends, so a checkpoint write always completes.
- ``Interrupted``: raised by long commands on Ctrl-C with the one line to print (for example
  "interrupted in epoch 37; resume with ... --resume"); ``cli.run_cli`` prints it and
  exits 130.
- ``WriteBehind``: writes (each through ``atomic_file``) done in order on one background thread
  while the caller goes on to the next item; a failed write is raised in the caller, and leaving
  the block waits for the writes (on Ctrl-C, for the one running).
- ``RunLock(folder)``: one run at a time in a run folder (``<folder>.lock`` beside it, held with
  ``flock`` and naming its process); a second run is refused in one line, a stale lock of a
  process that is gone is taken over with one line.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["Interrupted", "check_output_path", "check_writable", "atomic_file", "atomic_save_paddle", "fsync_replace",
           "atomic_write_bytes", "atomic_write_text", "atomic_copy", "temporary_leftovers", "set_aside", "deferred_interrupts", "with_path",
           "make_parent", "RunLock", "RunInUse", "WriteBehind"]


class WriteBehind:
    """Run writes (callables) in the order given, on one background thread, while the caller goes
    on: the next photo's network need not wait for this one's file to be encoded, written and
    fsynced. At most ``depth`` writes wait; ``submit`` blocks until one is done beyond that (so
    memory holds a bounded number of pending outputs). An exception raised by a write is raised in
    the caller, at its next ``submit`` or when the block ends. Leaving the block waits for every
    write handed over; leaving it by an exception (Ctrl-C included) drops the writes not yet started
    and waits for the one running, so no file is left half-written (each writer writes atomically)."""

    def __init__(self, depth: int = 2):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.depth = max(1, int(depth))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write_behind")
        self._pending = deque()

    def submit(self, fn, *args) -> None:
        """Hand ``fn(*args)`` to the writer thread (after raising any earlier write's error)."""
        self._drain(self.depth - 1)
        self._pending.append(self._pool.submit(fn, *args))

    def _drain(self, keep: int) -> None:
        while self._pending and (len(self._pending) > keep or self._pending[0].done()):
            self._pending.popleft().result()

    def close(self) -> None:
        """Wait for every write; raise the first error."""
        try:
            self._drain(0)
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        for fut in self._pending:            # the caller failed: no new writes, the running one finishes
            fut.cancel()
        self._pool.shutdown(wait=True)


_held: list[list[int]] = []   # signals received by the outermost deferred_interrupts block in force


class Interrupted(Exception):
    """A long command stopped by SIGINT/SIGTERM; ``str(exc)`` is the one line for the user."""


def with_path(exc: OSError, path: str | os.PathLike, side: str = "output") -> OSError:
    """``exc`` as an ``OSError`` of the same errno (and subclass) that names ``path`` (the file
    the user asked for, not a hidden temporary name) and, as its ``side`` attribute, whether that
    is an ``"output"`` or an ``"input"``; ``cli.run_cli`` prints it as one line naming both."""
    new = OSError(f"{path}: {exc}") if exc.errno is None else \
        OSError(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(path))
    new.side = side
    return new


def make_parent(path: str | os.PathLike) -> None:
    """Create the folder of ``path`` (and its parents); an existing *file* on the way is a
    ``NotADirectoryError`` naming it, not Python's bare "File exists"."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):   # a file on the way: mkdir says one or the other
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
    one. An ``OSError`` (full disk, read-only folder) is re-raised naming ``path`` as an output,
    except one naming a file of ``sources`` (an input being read), which names that file as an
    input. The temporary file never stays behind."""
    path = Path(path)
    tmp = None
    try:
        make_parent(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield tmp
        fsync_replace(tmp, path)
    except OSError as exc:   # name the file the user knows, not the hidden temporary one
        # errors only writing gives name the output even where shutil's copy named its source
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG) and \
                exc.filename is not None and os.fspath(exc.filename) in {os.fspath(s) for s in sources}:
            raise with_path(exc, exc.filename, side="input") from exc
        raise with_path(exc, path) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def temporary_leftovers(folder: str | os.PathLike, depth: int = 1) -> list[Path]:
    """The hidden temporary files that ``atomic_file`` writes (``.<name>.<random>.tmp``) left in
    ``folder`` and up to ``depth`` levels below it by a process that was killed mid-write (a live
    ``atomic_file`` removes its own); sorted."""
    folder = Path(folder)
    patterns = [".*.tmp"] + ["/".join(["*"] * k + [".*.tmp"]) for k in range(1, depth + 1)]
    return sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})


def atomic_save_paddle(obj, path: str | os.PathLike) -> Path:
    """``paddle.save(obj, path)`` through ``atomic_file``: all or nothing; a signal during the
    write and the rename waits for both."""
    import paddle

    with deferred_interrupts(), atomic_file(path) as tmp:
        paddle.save(obj, tmp)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and
    ``os.replace``: readers see the old file or the new one. An ``OSError`` (full disk,
    read-only folder) is re-raised naming ``path``, and no temporary file is left
    (``safety.atomic_file``)."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy the file ``src`` onto ``path`` the way ``atomic_write_bytes`` writes (a temporary
    file in the same folder, fsync, ``os.replace``), without holding it in memory. An
    ``OSError`` while writing names ``path``; one reading ``src`` names ``src``."""
    with atomic_file(path, sources=(src,)) as tmp:
        shutil.copyfile(src, tmp)
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


class RunInUse(FileExistsError):
    """A run folder that another live process holds (``RunLock``); ``str(exc)`` is the one line."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (Linux /proc, clock ticks since boot), or None;
    with the pid it tells a live holder from a new process that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # alive, another user's
        return True
    return start is None or _process_start(pid) in (None, start)


class RunLock:
    """An advisory lock on a run folder while a run writes there, task-neutral (fovea folds, seg
    save dirs). ``with RunLock(folder, "training"):`` or ``acquire()`` / ``release()``.

    The lock is the file ``<folder>.lock`` beside the folder (so renaming the folder aside does not
    move it), holding JSON ``{pid, host, started, proc_start, command}`` and an exclusive ``flock``
    for as long as the process lives: the kernel drops the flock when the process dies, whatever
    kills it. A second process is refused (``RunInUse``, one line naming pid, host, start time and
    command). A lock file whose flock is free was left by a process that is gone (SIGKILL, power
    loss): it is taken over and ``note`` holds the one line saying so (``acquire`` prints it).
    A lock naming another host, or a live process on this one, is refused even when its flock is
    free (file systems without flock support), with the file to delete if that process is gone.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run") -> None:
        self.folder = Path(folder)
        self.path = self.folder.with_name(self.folder.name + ".lock")
        self.what = what
        self.note: str | None = None
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def _describe(self, info: dict) -> str:
        return (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
                + (f": {info['command']}" if info.get("command") else ""))

    def _refuse(self, info: dict, gone_hint: bool) -> RunInUse:
        hint = f"; if that process is gone, delete {self.path}" if gone_hint else ""
        return RunInUse(f"{self.folder} is in use by another {self.what} ({self._describe(info)}): wait for it to "
                        f"finish or use another folder{hint}")

    @staticmethod
    def _read(fd: int) -> dict:
        import json

        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        try:
            info = json.loads(raw.decode() or "{}")
        except ValueError:
            return {"pid": "?", "host": "?", "started": "?"} if raw.strip() else {}
        return info if isinstance(info, dict) else {}

    def _open_locked(self) -> tuple[int, dict]:
        """The lock file, open and flocked, with what it held; RunInUse while a live process holds it."""
        try:
            import fcntl
        except ImportError:          # no flock (Windows): the pid check below alone
            fcntl = None
        make_parent(self.path)
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise with_path(exc, self.path) from exc
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                info = self._read(fd)
                os.close(fd)
                raise self._refuse(info, gone_hint=False) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:                 # not a file its last holder removed while we waited for it
                return fd, self._read(fd)
            os.close(fd)
        raise RunInUse(f"{self.path}: the lock keeps changing hands; is another {self.what} starting?")

    def acquire(self) -> "RunLock":
        """Take the lock (RunInUse when another live process holds it); prints ``note`` on a takeover."""
        import json
        import socket
        import sys
        import time

        fd, old = self._open_locked()
        host = socket.gethostname()
        if old:
            pid = old.get("pid")
            other_host = old.get("host") != host
            if other_host or (isinstance(pid, int) and pid != os.getpid()
                              and _process_alive(pid, old.get("proc_start"))):
                os.close(fd)
                raise self._refuse(old, gone_hint=True)
            self.note = (f"note: {self.folder}: took over the lock of an earlier {self.what} that is no longer "
                         f"running ({self._describe(old)})")
        info = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "proc_start": _process_start(os.getpid()), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
        self._fd = fd
        if self.note:
            print(self.note, flush=True)
        return self

    def release(self) -> None:
        """Remove the lock file (while still holding its flock), then let go."""
        if self._fd is None:
            return
        try:
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None
