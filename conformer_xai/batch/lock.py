"""One writer per store: an advisory ``fcntl.flock`` lock on a file beside the store.

The lock file ``<store>.lock`` (``<store>/shard-<rank>.lock`` for a torchrun rank's shard) is
taken before anything of the store is created and held for the whole run; it holds the PID of
its holder, so that a second writer can say who holds it. The kernel drops a ``flock`` lock when
its process dies (killed, crashed), so the lock of a dead process is simply taken over by the
next run. The file is removed on release; a waiter that opened it before the removal sees that
its file is no longer the one at the path and takes the lock again on the new file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["StoreBusyError", "StoreLock", "lock_path", "deferred_interrupt"]


class StoreBusyError(RuntimeError):
    """Another live process writes (or merges) the store; the message names its PID."""


def lock_path(store: str | os.PathLike) -> Path:
    """The lock file of a store: ``<parent>/<name>.lock`` of the store's real path.

    The real path (symlinks and ``.`` resolved) makes two writers that name one store in
    different ways take the same lock. When the parent folder is not writable (``--out .`` in
    a read-only parent, say) the lock file is ``<store>/.conformer-xai.lock`` instead.
    """
    real = Path(os.path.realpath(store))
    beside = real.parent / f"{real.name}.lock"
    if real.is_dir() and not os.access(real.parent, os.W_OK | os.X_OK):
        return real / ".conformer-xai.lock"
    return beside


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """An exclusive, non-blocking ``flock`` on ``path``; a context manager.

    Attributes:
        path: The lock file.
        stale_pid: The PID found in the lock file when the lock was taken over from a process
            that no longer runs (killed), else None.
    """

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self.stale_pid: int | None = None
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        """Take the lock, or raise :class:`StoreBusyError` naming the holder's PID.

        Raises:
            StoreBusyError: A live process holds the lock.
            OSError: The lock file cannot be created (read-only folder, ...).
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                pid = _pid_in(self.path)
                holder = f"process {pid}" if pid else "another process"
                raise StoreBusyError(
                    f"{self.what} is being written by {holder} (lock file {self.path}); wait "
                    "for it to finish or stop it, or choose another store path") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # released and removed by its holder meanwhile: lock the new file
        previous = _pid_in(self.path)
        if previous is not None and previous != os.getpid() and not _alive(previous):
            self.stale_pid = previous
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) while the body runs, then raise it as KeyboardInterrupt.

    Used around steps that must not stop half-way in the main thread (Zarr's event-loop calls
    would otherwise leave never-awaited coroutines behind). A no-op outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
