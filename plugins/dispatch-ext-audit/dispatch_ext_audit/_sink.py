"""Where audit lines go: an append-only JSON-lines file, written cheaply and safely."""

from __future__ import annotations

import os
import threading
import time
import weakref
from pathlib import Path

__all__ = ["JsonLinesFile"]

_BUFFER_CHARS = 64 * 1024  # flush earlier than the interval once this much is pending
_monotonic = time.monotonic
_sinks: weakref.WeakSet[JsonLinesFile] = weakref.WeakSet()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _flush_and_close(fd: int, pending: list[str]) -> None:
    """Last words of a sink (collected, or the interpreter exits): keep every line."""
    try:
        if pending:
            _write_all(fd, "".join(pending).encode("utf-8"))
            pending.clear()
    finally:
        os.close(fd)


def _before_fork() -> None:
    # A child must not inherit unwritten lines (it would write them a second time).
    for sink in list(_sinks):
        sink.flush()


def _after_fork_in_child() -> None:
    for sink in list(_sinks):
        sink._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


class JsonLinesFile:
    """Appends lines to a UTF-8 file.

    The file is opened on the first line (so building the extension creates nothing) in
    append mode. Lines are buffered and written in one ``write`` of whole lines when a
    write finds the last flush older than ``flush_interval`` seconds or 64 KiB pending, on
    :meth:`flush` / :meth:`close`, when the sink is garbage collected and when the
    interpreter exits; ``flush_interval=0`` writes every line at once. Because every
    system call carries whole lines to an ``O_APPEND`` file, several processes (the
    workers of one engine) can share the file. A write after :meth:`close` opens the file
    again. Safe to share between threads.
    """

    def __init__(self, path: str | os.PathLike[str], flush_interval: float = 1.0) -> None:
        if flush_interval < 0:
            raise ValueError(f"flush_interval must be >= 0 seconds, got {flush_interval!r}")
        self.path = Path(path).expanduser().resolve()
        self.flush_interval = float(flush_interval)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pending: list[str] = []
        self._size = 0
        self._closer: weakref.finalize[[int, list[str]], JsonLinesFile] | None = None
        self._flush_due = 0.0

    def write(self, line: str) -> None:
        """Append ``line`` (which ends with a newline)."""
        lock = self._lock
        lock.acquire()  # (cheaper than ``with``: this runs for every line)
        try:
            if self._fd is None:
                self._open()
            self._pending.append(line)
            self._size += len(line)
            now = _monotonic()
            if now >= self._flush_due or self._size >= _BUFFER_CHARS:
                self._flush_locked()
                self._flush_due = now + self.flush_interval
        finally:
            lock.release()

    def flush(self) -> None:
        """Write the pending lines to the file."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Write the pending lines and close the file; a later :meth:`write` reopens it."""
        with self._lock:
            closer, self._closer, self._fd = self._closer, None, None
            self._size = 0
            if closer is not None:
                closer()  # writes what is pending, closes the descriptor
            _sinks.discard(self)

    def _flush_locked(self) -> None:
        if self._pending and self._fd is not None:
            data = "".join(self._pending).encode("utf-8")
            self._pending.clear()
            self._size = 0
            _write_all(self._fd, data)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OSError(
                f"audit log {str(self.path)!r} cannot be opened for appending ({exc}); "
                "set 'path' under [extensions.audit] in dispatch.toml, or "
                "DISPATCH_AUDIT_PATH, to a writable file"
            ) from exc
        self._fd = fd
        self._flush_due = 0.0  # the first line reaches the file at once
        # Writes what is pending and closes the file when the sink is collected, or when
        # the process exits without a graceful shutdown.
        self._closer = weakref.finalize(self, _flush_and_close, fd, self._pending)
        _sinks.add(self)

    def _forked(self) -> None:
        # In a new child process: a fresh lock (another thread may have held the old one
        # at the fork); the shared descriptor stays usable, appends stay whole lines.
        self._lock = threading.Lock()
        self._pending.clear()
        self._size = 0

    def __repr__(self) -> str:
        return f"JsonLinesFile({str(self.path)!r})"
