"""Where audit lines go: an append-only JSON-lines file, written cheaply and safely."""

from __future__ import annotations

import os
import threading
import time
import weakref
from pathlib import Path
from typing import IO

__all__ = ["JsonLinesFile"]


class JsonLinesFile:
    """Appends lines to a UTF-8 file.

    The file is opened on the first line (so building the extension creates nothing),
    written through a buffer, and flushed when a write finds the last flush older than
    ``flush_interval`` seconds, on :meth:`flush` / :meth:`close`, when the sink is garbage
    collected and when the interpreter exits. ``flush_interval=0`` flushes every line. A
    write after :meth:`close` opens the file again. Safe to share between threads.
    """

    def __init__(self, path: str | os.PathLike[str], flush_interval: float = 1.0) -> None:
        if flush_interval < 0:
            raise ValueError(f"flush_interval must be >= 0 seconds, got {flush_interval!r}")
        self.path = Path(path).expanduser().resolve()
        self.flush_interval = float(flush_interval)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._closer: weakref.finalize[[], JsonLinesFile] | None = None
        self._flush_due = 0.0

    def write(self, line: str) -> None:
        """Append ``line`` (which ends with a newline)."""
        with self._lock:
            file = self._file
            if file is None:
                file = self._open()
            file.write(line)
            now = time.monotonic()
            if now >= self._flush_due:
                file.flush()
                self._flush_due = now + self.flush_interval

    def flush(self) -> None:
        """Push buffered lines to the operating system."""
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        """Flush and close the file; a later :meth:`write` opens it again."""
        with self._lock:
            closer, self._closer, self._file = self._closer, None, None
            if closer is not None:
                closer()

    def _open(self) -> IO[str]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file = open(self.path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115 - kept open
        except OSError as exc:
            raise OSError(
                f"audit log {str(self.path)!r} cannot be opened for appending ({exc}); "
                "set 'path' under [extensions.audit] in dispatch.toml, or "
                "DISPATCH_AUDIT_PATH, to a writable file"
            ) from exc
        self._file = file
        self._flush_due = 0.0  # the first line reaches the file at once
        # Closes (and so flushes) the file when the sink is collected or the process exits
        # without a graceful shutdown.
        self._closer = weakref.finalize(self, file.close)
        return file

    def __repr__(self) -> str:
        return f"JsonLinesFile({str(self.path)!r})"
