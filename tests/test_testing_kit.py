"""The testing kit: the recorder, the contract check, the fixtures and the public names."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import re
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dispatch_ext
import dispatch_ext.testing
from dispatch_ext import HOOK_NAMES, CronEntry, Job, JobState, Registry, WorkflowRun, hookimpl
from dispatch_ext import interfaces as ifaces
from dispatch_ext._validation import HOOK_ARGS
from dispatch_ext.config import Config
from dispatch_ext.discovery import ExtensionRecord, discover
from dispatch_ext.engine import Engine
from dispatch_ext.errors import UnknownHookError
from dispatch_ext.testing import (
    Event,
    FakeDistributions,
    Recorder,
    assert_valid_extension,
    check_extension,
)

NOW = dt.datetime(2025, 1, 2, 10, 0, tzinfo=dt.timezone.utc)
JOB = Job(id="job-1", name="send_email", state=JobState.COMPLETED)
RUN = WorkflowRun(id="run-1", name="fulfil_order")
ENTRY = CronEntry(name="nightly", schedule="0 3 * * *", job_name="send_email")


def arguments(hook: str) -> dict[str, Any]:
    """One valid set of keyword arguments for ``hook``."""
    values: dict[str, Any] = {
        "job": JOB,
        "run": RUN,
        "entry": ENTRY,
        "elapsed": dt.timedelta(seconds=1.5),
        "error": RuntimeError("boom"),
        "attempt": 2,
        "next_run_at": NOW,
        "step": "charge",
    }
    return {name: values[name] for name in HOOK_ARGS[hook]}


def named(records: list[ExtensionRecord], name: str) -> ExtensionRecord:
    [record] = [r for r in records if r.name == name]
    return record


# -- Recorder ----------------------------------------------------------------------------


def test_recorder_implements_every_hook(dispatch_registry: Registry, recorder: Recorder) -> None:
    dispatch_registry.register(recorder)
    assert dispatch_registry.hooks_of("recorder") == list(HOOK_NAMES)


def test_recorder_records_each_call_with_its_arguments_in_order(
    dispatch_registry: Registry, recorder: Recorder
) -> None:
    dispatch_registry.register(recorder)
    sent = [(hook, arguments(hook)) for hook in reversed(HOOK_NAMES)]
    for hook, kwargs in sent:
        dispatch_registry.emit(hook, **kwargs)

    assert [(event.hook, dict(event.kwargs)) for event in recorder.events] == sent
    assert recorder.hooks() == [hook for hook, _ in sent]
    assert len(recorder) == len(HOOK_NAMES)


def test_recorder_of_clear_and_event_access(recorder: Recorder) -> None:
    error = ValueError("declined")
    recorder.on_job_failed(job=JOB, error=error)
    recorder.on_job_completed(job=JOB, elapsed=dt.timedelta(seconds=2))
    recorder.on_job_failed(job=JOB, error=error)

    failed = recorder.of("on_job_failed")
    assert [event.hook for event in failed] == ["on_job_failed", "on_job_failed"]
    assert failed[0]["error"] is error
    assert failed[0] == Event("on_job_failed", {"job": JOB, "error": error})
    assert recorder.of("on_shutdown") == []

    recorder.clear()
    assert recorder.events == []
    assert recorder.hooks() == []


def test_recorder_events_cannot_be_changed(recorder: Recorder) -> None:
    recorder.on_job_started(job=JOB)
    event = recorder.events[0]
    with pytest.raises(TypeError):
        event.kwargs["job"] = None  # type: ignore[index]
    recorder.events.clear()  # a copy: the recorder keeps its events
    assert recorder.hooks() == ["on_job_started"]


def test_recorder_rejects_unknown_hook_names_with_a_suggestion(recorder: Recorder) -> None:
    with pytest.raises(UnknownHookError, match="did you mean on_job_completed"):
        recorder.of("on_job_complete")
    with pytest.raises(UnknownHookError, match="did you mean on_shutdown"):
        recorder.wait_for("on_shutdwn", timeout=0.01)


def test_recorder_hears_async_emits(dispatch_registry: Registry, recorder: Recorder) -> None:
    dispatch_registry.register(recorder)
    asyncio.run(dispatch_registry.aemit("on_workflow_started", run=RUN))
    assert recorder.of("on_workflow_started")[0]["run"] is RUN


def test_recorder_loses_nothing_under_concurrent_emits(
    dispatch_registry: Registry, recorder: Recorder
) -> None:
    dispatch_registry.register(recorder)
    threads, per_thread = 8, 500
    start = threading.Barrier(threads)

    def emit_many(index: int) -> None:
        start.wait()
        for attempt in range(per_thread):
            job = Job(id=f"{index}-{attempt}", name="n")
            dispatch_registry.emit("on_job_enqueued", job=job)

    workers = [threading.Thread(target=emit_many, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    ids = [event["job"].id for event in recorder.of("on_job_enqueued")]
    assert len(ids) == threads * per_thread
    assert len(set(ids)) == threads * per_thread
    for index in range(threads):  # each thread's events keep their order
        mine = [i for i in ids if i.startswith(f"{index}-")]
        assert mine == [f"{index}-{attempt}" for attempt in range(per_thread)]


def test_recorder_wait_for_returns_when_events_arrive_from_another_thread(
    recorder: Recorder,
) -> None:
    def later() -> None:
        for _ in range(3):
            recorder.on_job_completed(job=JOB, elapsed=dt.timedelta(0))

    timer = threading.Timer(0.05, later)
    timer.start()
    try:
        events = recorder.wait_for("on_job_completed", count=3, timeout=30)
    finally:
        timer.join()
    assert len(events) == 3


def test_recorder_wait_for_fails_naming_what_it_heard(recorder: Recorder) -> None:
    recorder.on_job_enqueued(job=JOB)
    with pytest.raises(
        AssertionError, match=r"heard on_job_completed 0 time\(s\).*on_job_enqueued"
    ):
        recorder.wait_for("on_job_completed", timeout=0.05)


# -- the contract check --------------------------------------------------------------------


class Valid:
    name = "valid"

    def on_job_completed(self, job: Job) -> None: ...

    async def on_job_failed(self, job: Job, error: BaseException) -> None: ...

    @hookimpl(specname="on_shutdown", trylast=True)
    def close(self) -> None: ...


def test_a_valid_extension_has_no_problems() -> None:
    assert check_extension(Valid()) == []
    assert_valid_extension(Valid())


def test_the_recorder_fits_the_contract() -> None:
    assert check_extension(Recorder()) == []


def test_unknown_hook_and_bad_argument_are_both_reported() -> None:
    class Typos:
        name = "typos"

        def on_job_complete(self, job: Job) -> None: ...

        def on_job_failed(self, job: Job, eror: BaseException) -> None: ...

    problems = check_extension(Typos())

    assert len(problems) == 2, problems
    assert (
        "'on_job_complete' is not a dispatch-ext hook; did you mean on_job_completed?"
        in (problems[0])
    )
    assert "on_job_failed has argument 'eror' (did you mean 'error'?)" in problems[1]
    assert all(problem.startswith("extension 'typos':") for problem in problems)


def test_generator_hooks_are_reported() -> None:
    class Generators:
        def on_job_started(self, job: Job) -> Iterator[None]:
            yield

        async def on_job_enqueued(self, job: Job) -> Any:
            yield

    problems = check_extension(Generators())

    assert len(problems) == 2, problems
    assert "on_job_enqueued is an async generator function" in problems[0]
    assert "on_job_started is a generator function" in problems[1]
    assert "body never runs" in problems[1]


def test_generator_hooks_are_reported_next_to_registration_problems() -> None:
    class Both:
        def on_job_started(self, job: Job) -> Iterator[None]:
            yield

        def on_jobs_started(self, job: Job) -> None: ...

    problems = check_extension(Both())
    assert any("did you mean on_job_started" in p for p in problems), problems
    assert any("on_job_started is a generator function" in p for p in problems), problems


@pytest.mark.parametrize("timeout", [0, -1, "5", True])
def test_a_bad_hook_timeout_is_reported(timeout: object) -> None:
    class Slow(Valid):
        hook_timeout = timeout

    [problem] = check_extension(Slow())
    assert f"hook_timeout is {timeout!r}" in problem


def test_an_extension_without_hooks_is_reported() -> None:
    class Nothing:
        name = "nothing"

        def handle_completed(self, job: Job) -> None: ...

    [problem] = check_extension(Nothing())
    assert "extension 'nothing' implements no hook" in problem


def test_a_class_instead_of_an_instance_is_reported() -> None:
    [problem] = check_extension(Valid)
    assert "Valid is a class; pass an instance" in problem


def test_a_declared_protocol_must_be_implemented() -> None:
    class Forgetful(ifaces.JobCompleted, ifaces.JobFailed):
        name = "forgetful"

        def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None: ...

    [problem] = check_extension(Forgetful())
    assert "declares JobFailed but does not define on_job_failed" in problem
    assert "def on_job_failed(self, job, error)" in problem
    assert check_extension(Forgetful(), protocols=False) == []


def test_every_protocol_stands_for_one_hook() -> None:
    class Everything(*(getattr(ifaces, name) for name in ifaces.__all__)):  # type: ignore[misc]
        pass

    problems = check_extension(Everything())
    missing = [re.search(r"does not define (\w+);", problem) for problem in problems]
    assert sorted(m.group(1) for m in missing if m) == sorted(HOOK_NAMES)
    assert len(problems) == len(ifaces.__all__)


def test_assert_valid_extension_lists_every_problem() -> None:
    class Broken:
        name = "broken"
        hook_timeout = 0

        def on_job_complete(self) -> None: ...

    with pytest.raises(AssertionError) as caught:
        assert_valid_extension(Broken())
    message = str(caught.value)
    assert message.startswith("'broken' is not a valid dispatch-ext extension:\n  - ")
    assert "did you mean on_job_completed?" in message
    assert "hook_timeout is 0" in message


def test_the_check_agrees_with_the_registry(dispatch_registry: Registry) -> None:
    class Wrong:
        def on_cron_fired(self, entry: CronEntry, jobs: Job) -> None: ...

    assert check_extension(Wrong())
    with pytest.raises(dispatch_ext.RegistrationError):
        dispatch_registry.register(Wrong())
    assert check_extension(Valid()) == []
    dispatch_registry.register(Valid())


# -- fixtures ------------------------------------------------------------------------------


def test_the_plugin_is_registered_by_its_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("dispatch_ext")
    assert plugin is sys.modules["dispatch_ext.testing.plugin"]


def test_the_plugin_module_imports_neither_engine_nor_discovery() -> None:
    code = (
        "import sys, dispatch_ext.testing.plugin\n"
        "heavy = sorted(m for m in sys.modules if m.startswith("
        "('dispatch_ext.engine', 'dispatch_ext.discovery', 'importlib_metadata')))\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_dispatch_registry_is_empty_and_not_strict(dispatch_registry: Registry) -> None:
    assert dispatch_registry.extensions() == []
    assert dispatch_registry.strict is False
    dispatch_registry.register(Valid())
    dispatch_registry.emit("on_job_completed", job=JOB, elapsed=dt.timedelta(0))


def test_memory_engine_runs_jobs_with_the_recorder(
    memory_engine: Engine, recorder: Recorder
) -> None:
    assert memory_engine.registry.extensions() == [("recorder", recorder)]

    @memory_engine.job("double", max_retries=0)
    def double(payload: int) -> int:
        return payload * 2

    async def scenario() -> str:
        async with memory_engine:
            job = await memory_engine.enqueue("double", 21)
            await memory_engine.drain()
            return job.id

    job_id = asyncio.run(scenario())

    assert recorder.hooks() == [
        "on_job_enqueued",
        "on_job_started",
        "on_job_completed",
        "on_shutdown",
    ]
    assert {event["job"].id for event in recorder.events if "job" in event.kwargs} == {job_id}


def test_memory_engine_leaves_installed_extensions_out(
    fake_distributions: FakeDistributions, memory_engine: Engine
) -> None:
    fake_distributions.extension(
        "kit-intruder", "class Extension:\n    def on_shutdown(self): ...\n"
    )
    assert named(discover(Config(enable=["kit-intruder"])), "kit-intruder").status == "loaded"

    async def scenario() -> None:
        async with memory_engine:
            pass

    asyncio.run(scenario())
    assert [name for name, _ in memory_engine.registry.extensions()] == ["recorder"]


def test_fake_distributions_settings_reach_the_constructor(
    fake_distributions: FakeDistributions,
) -> None:
    # The example of docs/writing-extensions.md, as written there.
    fake_distributions.extension(
        "greeter",
        """
        class Extension:
            def __init__(self, greeting="hello"):
                self.greeting = greeting

            def on_shutdown(self):
                pass
        """,
    )

    config = Config(enable=("greeter",), settings={"greeter": {"greeting": "hi"}})
    record = {r.name: r for r in discover(config)}["greeter"]

    assert record.status == "loaded"
    assert record.extension.greeting == "hi"  # type: ignore[attr-defined]
    assert record.distribution == "dispatch-ext-greeter"
    assert record.hooks == ("on_shutdown",)


def test_fake_distributions_are_seen_when_written_after_a_scan(
    fake_distributions: FakeDistributions,
) -> None:
    config = Config(enable=["kit-first", "kit-second"])
    fake_distributions.extension("kit-first", "class Extension:\n    def on_shutdown(self): ...\n")
    assert [r.name for r in discover(config) if r.status == "loaded"] == ["kit-first"]

    fake_distributions(
        "kit-second-dist",
        "2.0",
        entry_points={"kit-second": "kit_second_mod:make"},
        modules={
            "kit_second_mod.py": "class E:\n    def on_shutdown(self): ...\n"
            "def make():\n    return E()\n"
        },
    )
    records = [r for r in discover(config) if r.name.startswith("kit-")]
    assert [(r.name, r.status, r.version) for r in records] == [
        ("kit-first", "loaded", "1.0"),
        ("kit-second", "loaded", "2.0"),
    ]


def test_fake_distributions_clean_up_after_themselves(tmp_path: Path) -> None:
    path_before = list(sys.path)
    config = Config(enable=["kit-transient"])
    with FakeDistributions(tmp_path / "site") as fakes:
        fakes.extension("kit-transient", "class Extension:\n    def on_shutdown(self): ...\n")
        assert named(discover(config), "kit-transient").status == "loaded"
        assert "fake_dispatch_ext_kit_transient" in sys.modules
    assert sys.path == path_before
    assert "fake_dispatch_ext_kit_transient" not in sys.modules
    assert [r.name for r in discover(config) if r.name == "kit-transient"] == []


# -- public names -------------------------------------------------------------------------


def _isort_order(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest; each sorted.
    group = 0 if len(name) > 1 and name.isupper() else 1 if name[:1].isupper() else 2
    return (group, name)


def _public_api_problems(module: types.ModuleType) -> list[str]:
    exported = list(module.__all__)
    problems = []
    if exported != sorted(exported, key=_isort_order):
        problems.append(f"{module.__name__}.__all__ is not sorted")
    if len(set(exported)) != len(exported):
        problems.append(f"{module.__name__}.__all__ has duplicates")
    for name in exported:
        if not hasattr(module, name):
            problems.append(f"{module.__name__}.__all__ names {name!r}, which does not exist")
    for name, value in vars(module).items():
        defined_here = getattr(value, "__module__", "") or ""
        if (
            not name.startswith("_")
            and name not in exported
            and not isinstance(value, types.ModuleType)
            and (inspect.isclass(value) or inspect.isfunction(value))
            and defined_here.startswith("dispatch_ext")
        ):
            problems.append(f"{module.__name__}.{name} is public but missing from __all__")
    return problems


@pytest.mark.parametrize("module", [dispatch_ext, dispatch_ext.testing], ids=lambda m: m.__name__)
def test_all_is_complete_and_sorted(module: types.ModuleType) -> None:
    assert _public_api_problems(module) == []


def test_the_public_api_check_can_fail() -> None:
    fake = types.ModuleType("dispatch_ext.fake")
    fake.__all__ = ["b", "a", "missing"]  # type: ignore[attr-defined]
    fake.a = fake.b = 1  # type: ignore[attr-defined]
    fake.Forgotten = type("Forgotten", (), {"__module__": "dispatch_ext.fake"})  # type: ignore[attr-defined]
    assert _public_api_problems(fake) == [
        "dispatch_ext.fake.__all__ is not sorted",
        "dispatch_ext.fake.__all__ names 'missing', which does not exist",
        "dispatch_ext.fake.Forgotten is public but missing from __all__",
    ]
