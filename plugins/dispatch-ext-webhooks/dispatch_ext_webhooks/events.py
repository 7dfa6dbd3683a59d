"""The event types and the JSON envelope every webhook carries.

A webhook body is ``{"type": ..., "timestamp": ..., "data": {...}}``: ``type`` is one of
:data:`EVENT_TYPES`, ``timestamp`` the ISO 8601 UTC time of the event, and ``data`` holds
the snapshots (``job``, ``run``, ``entry``) as plain dicts plus the hook's other
arguments: ``step``, ``elapsed`` in seconds, ``error`` as ``{"type", "message"}``,
``attempt`` and ``next_run_at``.

The body is encoded with ``ensure_ascii``: every character outside ASCII travels as a JSON
``\\uXXXX`` escape, so the bytes that are signed are the bytes sent whatever a proxy or a
receiver assumes about the charset, and U+2028/U+2029 can never split a line.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from typing import Any

__all__ = ["EVENT_TYPES", "HOOK_EVENTS", "encode_envelope", "error_data", "new_message_id"]

HOOK_EVENTS: dict[str, str] = {
    "on_job_enqueued": "dispatch.job.enqueued",
    "on_job_started": "dispatch.job.started",
    "on_job_completed": "dispatch.job.completed",
    "on_job_failed": "dispatch.job.failed",
    "on_job_retrying": "dispatch.job.retrying",
    "on_job_dlq": "dispatch.job.dlq",
    "on_workflow_started": "dispatch.workflow.started",
    "on_workflow_step_completed": "dispatch.workflow.step_completed",
    "on_workflow_step_failed": "dispatch.workflow.step_failed",
    "on_workflow_completed": "dispatch.workflow.completed",
    "on_workflow_failed": "dispatch.workflow.failed",
    "on_cron_fired": "dispatch.cron.fired",
}
"""The event type each hook sends (``on_shutdown`` sends none)."""

EVENT_TYPES: tuple[str, ...] = tuple(HOOK_EVENTS.values())
"""Every event type, in the order of the hooks."""


def error_data(error: object) -> dict[str, str]:
    """``{"type", "message"}`` for an exception (type module-qualified unless built in)."""
    cls = type(error)
    kind = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    try:
        message = str(error)
    except Exception:  # an exception whose __str__ raises still gets reported
        message = f"<unprintable {kind}>"
    return {"type": kind, "message": message}


def _fallback(value: object) -> Any:
    # Bridged engines can hand over payloads that are not JSON: send their text.
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def _timestamp(now: float) -> str:
    moment = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode_envelope(event_type: str, data: dict[str, Any], now: float | None = None) -> bytes:
    """The exact bytes of a webhook body (compact, ASCII-only JSON)."""
    envelope = {
        "type": event_type,
        "timestamp": _timestamp(time.time() if now is None else now),
        "data": data,
    }
    text = json.dumps(envelope, ensure_ascii=True, separators=(",", ":"), default=_fallback)
    return text.encode("ascii")


def new_message_id() -> str:
    """A fresh ``webhook-id``: ``msg_`` and 32 hex digits, time-ordered.

    48 bits of milliseconds since the epoch (so ids sort by creation) and 80 random bits
    (the layout of a ULID, written in hex). The ids need to be unique, not secret: the
    random bits come from :mod:`random`, reseeded in a forked child, not from a syscall.
    """
    return f"msg_{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"
