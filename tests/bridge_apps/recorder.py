"""Extensions the bridge tests install as a real distribution (module ``bridge_recorder``).

``FileRecorder`` appends one JSON line per hook call to a file shared by every process
(producer, workers, beat), with the process id, so a test can read what each process
heard and in which order. ``Faulty`` raises in every hook and has an async hook slower
than its timeout: the tasks must not notice.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any


def _error(error: BaseException) -> dict[str, str]:
    return {"type": type(error).__name__, "message": str(error)}


class FileRecorder:
    """Writes every event it hears to ``path`` as a JSON line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, hook: str, **fields: Any) -> None:
        record = {"hook": hook, "pid": os.getpid(), "time": time.time(), **fields}
        line = (json.dumps(record, default=str, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def on_job_enqueued(self, job: Any) -> None:
        self._write("on_job_enqueued", job=job.to_dict())

    def on_job_started(self, job: Any) -> None:
        self._write("on_job_started", job=job.to_dict())

    def on_job_completed(self, job: Any, elapsed: Any) -> None:
        self._write("on_job_completed", job=job.to_dict(), elapsed=elapsed.total_seconds())

    def on_job_failed(self, job: Any, error: BaseException) -> None:
        self._write("on_job_failed", job=job.to_dict(), error=_error(error))

    def on_job_retrying(
        self, job: Any, error: BaseException, attempt: int, next_run_at: Any
    ) -> None:
        self._write(
            "on_job_retrying",
            job=job.to_dict(),
            error=_error(error),
            attempt=attempt,
            next_run_at=next_run_at.isoformat(),
            next_run_at_utc=next_run_at.utcoffset() is not None
            and next_run_at.utcoffset().total_seconds() == 0,
        )

    def on_job_dlq(self, job: Any, error: BaseException) -> None:
        self._write("on_job_dlq", job=job.to_dict(), error=_error(error))

    def on_workflow_started(self, run: Any) -> None:
        self._write("on_workflow_started", run=run.to_dict())

    def on_workflow_step_completed(self, run: Any, step: str, elapsed: Any) -> None:
        self._write(
            "on_workflow_step_completed",
            run=run.to_dict(),
            step=step,
            elapsed=elapsed.total_seconds(),
        )

    def on_workflow_step_failed(self, run: Any, step: str, error: BaseException) -> None:
        self._write("on_workflow_step_failed", run=run.to_dict(), step=step, error=_error(error))

    def on_workflow_completed(self, run: Any, elapsed: Any) -> None:
        self._write("on_workflow_completed", run=run.to_dict(), elapsed=elapsed.total_seconds())

    def on_workflow_failed(self, run: Any, error: BaseException) -> None:
        self._write("on_workflow_failed", run=run.to_dict(), error=_error(error))

    def on_cron_fired(self, entry: Any, job: Any) -> None:
        self._write("on_cron_fired", entry=entry.to_dict(), job=job.to_dict())

    def on_shutdown(self) -> None:
        self._write("on_shutdown")


class Faulty:
    """Raises in every job hook; its async ``on_job_started`` outlasts its timeout."""

    hook_timeout = 0.2

    def _boom(self, hook: str) -> None:
        raise RuntimeError(f"faulty extension raised in {hook}")

    async def on_job_started(self, job: Any) -> None:
        await asyncio.sleep(5)

    def on_job_enqueued(self, job: Any) -> None:
        self._boom("on_job_enqueued")

    def on_job_completed(self, job: Any) -> None:
        self._boom("on_job_completed")

    def on_job_retrying(self, job: Any) -> None:
        self._boom("on_job_retrying")

    def on_job_failed(self, job: Any) -> None:
        self._boom("on_job_failed")

    def on_job_dlq(self, job: Any) -> None:
        self._boom("on_job_dlq")

    def on_shutdown(self) -> None:
        self._boom("on_shutdown")
