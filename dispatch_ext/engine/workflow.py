"""Workflows: ``async def fn(wf, payload)`` made of checkpointed steps.

``await wf.step(name, fn, *args)`` runs ``fn`` (sync in a thread, or async) and stores its
JSON result as the step's checkpoint before ``on_workflow_step_completed`` fires. When a
run is interrupted (crash, shutdown) it resumes on another started engine on the same
store (at once on a live worker, or at the next start): the workflow function runs again
from the top, and every step checkpointed before returns its stored result at once,
without running and without a hook.

A run is held by one worker under one claim; its checkpoints and its end are stored
only while that claim holds (fencing). A worker that lost a run (its lease ran out and
another worker took the run over) stops running it at its next checkpoint, with one
warning, and fires no further hook for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..models import RunState
from .records import RunRecord, dumps, error_text

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["WorkflowContext", "WorkflowFunction", "WorkflowInterrupted", "execute"]

logger = logging.getLogger("dispatch_ext.engine")

WorkflowFunction = Callable[["WorkflowContext", Any], Awaitable[Any]]


class WorkflowInterrupted(BaseException):
    """Raised inside a workflow when the engine shuts down between two steps.

    It derives from ``BaseException`` so that ``except Exception`` in workflow code does
    not swallow it; the run stays ``running`` and resumes on the next engine that takes it.
    """


class _TakenOver(BaseException):
    """Raised inside a workflow whose run another worker took over (fenced off)."""


def _taken_over(run: RunRecord, what: str) -> None:
    logger.warning(
        "workflow run %s (%r) was taken over by another worker after this worker's lease "
        "expired; %s is discarded and the run goes on there",
        run.id,
        run.name,
        what,
    )


class WorkflowContext:
    """What a workflow function gets as ``wf``.

    Attributes:
        run_id: The id of this run.
        name: The workflow's name.
        engine: The engine running it (to enqueue jobs, for instance).
        resumed: Whether this run was interrupted before and is resuming.
    """

    def __init__(
        self,
        engine: Engine,
        run: RunRecord,
        checkpoints: dict[str, str],
        resumed: bool,
        owner: str = "",
        claim: int = 0,
    ) -> None:
        self.engine = engine
        self._owner = owner  # the worker and the claim number this run is held under
        self._claim = claim
        self.run_id = run.id
        self.name = run.name
        self.resumed = resumed
        self._run = run
        self._checkpoints = checkpoints
        self._done: set[str] = set()

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one step and return its result (as JSON would give it back).

        A step checkpointed by an earlier, interrupted run of this workflow is not run
        again: its stored result is returned and no hook fires. Each step name may
        complete once per run.

        Raises:
            ValueError: the name was already used by a completed step of this run.
            PayloadError: the result is not JSON-serialisable (the step counts as failed).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"workflow {self.name!r}: a step name must be a non-empty string")
        if name in self._done:
            raise ValueError(
                f"workflow {self.name!r}: step {name!r} already completed in this run; give "
                "every step its own name"
            )
        stored = self._checkpoints.get(name)
        if stored is not None:
            self._done.add(name)
            return json.loads(stored)
        engine = self.engine
        if engine.stopping:
            raise WorkflowInterrupted(name)
        registry = engine.registry
        started = time.perf_counter()
        try:
            if inspect.iscoroutinefunction(fn):
                result = await fn(*args, **kwargs)
            else:
                loop = asyncio.get_running_loop()
                call = fn if not kwargs else (lambda *a: fn(*a, **kwargs))
                result = await engine._threads.submit(loop, call, *args)
                if inspect.isawaitable(result):
                    result = await result
            text = dumps(result, f"the result of step {name!r} of workflow {self.name!r}")
        except Exception as exc:
            if registry.has_listeners("on_workflow_step_failed"):
                await engine._emit(
                    "on_workflow_step_failed", run=self._run.snapshot(), step=name, error=exc
                )
            raise
        elapsed = time.perf_counter() - started
        if not await engine.store.save_step(
            self._run.id, name, text, elapsed, self._owner, self._claim
        ):
            _taken_over(self._run, f"the result of step {name!r}")
            raise _TakenOver(name)
        self._checkpoints[name] = text
        self._done.add(name)
        if registry.has_listeners("on_workflow_step_completed"):
            await engine._emit(
                "on_workflow_step_completed",
                run=self._run.snapshot(),
                step=name,
                elapsed=dt.timedelta(seconds=elapsed),
            )
        return json.loads(text)


async def execute(
    engine: Engine,
    fn: WorkflowFunction,
    run: RunRecord,
    checkpoints: dict[str, str],
    resumed: bool,
    owner: str,
    claim: int,
) -> None:
    """Run (or resume) one workflow run to its end, storing and announcing the end.

    ``owner`` and ``claim`` say under which claim this worker holds the run.
    """
    wf = WorkflowContext(engine, run, checkpoints, resumed, owner, claim)
    try:
        output = await fn(wf, json.loads(run.input))
        text = dumps(output, f"the output of workflow {run.name!r}")
    except WorkflowInterrupted:
        logger.info(
            "workflow run %s (%s) interrupted by shutdown; it resumes on the next engine "
            "that takes it (another worker on this store, or the next start)",
            run.id,
            run.name,
        )
        return
    except _TakenOver:
        return  # said by the step
    except Exception as exc:
        run.state, run.error, run.completed_at = RunState.FAILED, error_text(exc), time.time()
        if not await engine.store.finish_run(run, owner, claim):
            _taken_over(run, "its failure")
            return
        if engine._listening("on_workflow_failed"):
            await engine._emit("on_workflow_failed", run=run.snapshot(), error=exc)
    else:
        run.state, run.output, run.completed_at = RunState.COMPLETED, text, time.time()
        if not await engine.store.finish_run(run, owner, claim):
            _taken_over(run, "its output")
            return
        if engine._listening("on_workflow_completed"):
            elapsed = dt.timedelta(seconds=max(0.0, run.completed_at - run.started_at))
            await engine._emit("on_workflow_completed", run=run.snapshot(), elapsed=elapsed)
