"""Registry: registration, validation, ordering, unregistration, payload handling."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest

from dispatch_ext import (
    HOOK_NAMES,
    Job,
    RegistrationError,
    Registry,
    UnknownHookError,
    hookimpl,
)
from dispatch_ext.models import freeze

# Built the way the engine builds snapshots: the payload deep-frozen with freeze().
JOB = Job(id="j1", name="send_email", payload=freeze({"to": "a@example.com", "tags": ["x"]}))
ELAPSED = dt.timedelta(seconds=1)


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = Registry(strict=False)
    yield registry
    registry.close()


class Recorder:
    """Appends ``(name, hook)`` to a shared list for every call."""

    def __init__(self, name: str, calls: list[tuple[str, str]]) -> None:
        self.name = name
        self.calls = calls

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        self.calls.append((self.name, "on_job_completed"))


# -- registration ---------------------------------------------------------------------


def test_a_method_named_like_a_hook_is_an_implementation(registry: Registry) -> None:
    calls: list[tuple[str, str]] = []
    assert registry.register(Recorder("a", calls)) == "a"
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    assert calls == [("a", "on_job_completed")]
    assert registry.implementers("on_job_completed") == ["a"]
    assert registry.hooks_of("a") == ["on_job_completed"]


def test_a_marked_method_is_an_implementation_under_any_name(registry: Registry) -> None:
    seen: list[str] = []

    class Marked:
        name = "marked"

        @hookimpl(specname="on_job_failed")
        def record_failure(self, job: Job, error: BaseException) -> None:
            seen.append(f"{job.id}: {error}")

        @hookimpl
        def on_shutdown(self) -> None:
            seen.append("shutdown")

        def helper(self) -> None:  # neither a hook name nor marked: ignored
            raise AssertionError("not a hook")

    registry.register(Marked())
    registry.emit("on_job_failed", job=JOB, error=ValueError("boom"))
    registry.emit("on_shutdown")
    assert seen == ["j1: boom", "shutdown"]
    assert registry.hooks_of("marked") == ["on_job_failed", "on_shutdown"]


def test_name_comes_from_argument_attribute_or_class(registry: Registry) -> None:
    class Plain:
        def on_shutdown(self) -> None:
            pass

    class Named(Plain):
        name = "from-attribute"

    assert registry.register(Plain()) == "Plain"
    assert registry.register(Named()) == "from-attribute"
    assert registry.register(Named(), name="explicit") == "explicit"
    assert [name for name, _ in registry.extensions()] == ["Plain", "from-attribute", "explicit"]


def test_a_module_like_object_registers_under_its_name(registry: Registry) -> None:
    import types

    module = types.ModuleType("my_ext_module")
    seen: list[Job] = []
    module.on_job_started = lambda job: seen.append(job)  # type: ignore[attr-defined]
    assert registry.register(module) == "my_ext_module"
    registry.emit("on_job_started", job=JOB)
    assert seen == [JOB]


def test_tryfirst_and_trylast_reorder_the_call_list(registry: Registry) -> None:
    calls: list[str] = []

    def make(label: str, **opts: bool) -> object:
        class Ext:
            name = label

            @hookimpl(**opts)
            def on_job_started(self, job: Job) -> None:
                calls.append(label)

        return Ext()

    registry.register(make("a"))
    registry.register(make("last", trylast=True))
    registry.register(make("b"))
    registry.register(make("first", tryfirst=True))
    registry.register(make("c"))
    registry.register(make("first2", tryfirst=True))

    registry.emit("on_job_started", job=JOB)
    expected = ["first", "first2", "a", "b", "c", "last"]
    assert calls == expected
    assert registry.implementers("on_job_started") == expected
    # extensions() keeps plain registration order
    assert [n for n, _ in registry.extensions()] == ["a", "last", "b", "first", "c", "first2"]


# -- validation: all or nothing -------------------------------------------------------


class Misspelled:
    name = "typo"

    def on_job_started(self, job: Job) -> None:
        pass

    def on_job_complete(self, job: Job) -> None:  # the hook is on_job_completed
        pass


class BadArgument:
    name = "typo"

    def on_job_started(self, job: Job) -> None:
        pass

    def on_job_failed(self, job: Job, eror: BaseException) -> None:  # the argument is error
        pass


class Corrected:
    name = "typo"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_job_started(self, job: Job) -> None:
        self.calls.append("started")

    def on_job_completed(self, job: Job) -> None:
        self.calls.append("completed")

    def on_job_failed(self, job: Job, error: BaseException) -> None:
        self.calls.append("failed")


def assert_nothing_registered(registry: Registry, name: str) -> None:
    assert name not in registry
    assert registry.extensions() == []
    assert all(registry.implementers(hook) == [] for hook in HOOK_NAMES)
    assert registry.plugin_manager.get_plugin(name) is None
    assert registry.plugin_manager.get_plugins() == set()


def test_misspelled_hook_is_refused_with_a_suggestion(registry: Registry) -> None:
    with pytest.raises(RegistrationError, match=r"did you mean on_job_completed\?") as caught:
        registry.register(Misspelled())
    assert "'typo'" in str(caught.value)
    assert "on_job_complete" in str(caught.value)
    assert_nothing_registered(registry, "typo")
    registry.emit("on_job_started", job=JOB)  # the valid method was not registered either


def test_argument_the_hook_lacks_is_refused(registry: Registry) -> None:
    with pytest.raises(RegistrationError, match=r"'eror'.*did you mean 'error'\?") as caught:
        registry.register(BadArgument())
    assert "on_job_failed" in str(caught.value)
    assert_nothing_registered(registry, "typo")


@pytest.mark.parametrize("broken", [Misspelled, BadArgument])
def test_corrected_extension_registers_under_the_same_name(
    registry: Registry, broken: type
) -> None:
    with pytest.raises(RegistrationError):
        registry.register(broken())
    fixed = Corrected()
    assert registry.register(fixed) == "typo"
    registry.emit("on_job_started", job=JOB)
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    registry.emit("on_job_failed", job=JOB, error=ValueError())
    assert fixed.calls == ["started", "completed", "failed"]


def test_every_problem_is_reported_at_once(registry: Registry) -> None:
    class TwoProblems:
        def on_job_complete(self) -> None:
            pass

        def on_workflow_failed(self, run: object, err: BaseException) -> None:
            pass

    with pytest.raises(RegistrationError) as caught:
        registry.register(TwoProblems())
    message = str(caught.value)
    assert "on_job_completed" in message
    assert "'err'" in message


def test_an_unknown_marked_method_is_refused(registry: Registry) -> None:
    class Marked:
        @hookimpl(specname="on_job_finished")
        def finished(self) -> None:
            pass

    with pytest.raises(RegistrationError, match="on_job_finished"):
        registry.register(Marked())
    assert len(registry) == 0


def test_positional_only_arguments_are_refused(registry: Registry) -> None:
    class PositionalOnly:
        def on_job_started(self, job: Job, /) -> None:
            pass

    with pytest.raises(RegistrationError, match="positional-only"):
        registry.register(PositionalOnly())
    assert len(registry) == 0


def test_wrappers_are_refused(registry: Registry) -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def on_job_started(self, job: Job) -> Any:
            yield

    with pytest.raises(RegistrationError, match="wrapper"):
        registry.register(Wrapper())
    assert len(registry) == 0


def test_public_non_hook_attributes_are_ignored(registry: Registry) -> None:
    class Ext:
        on_call = "a string, not a method"  # not callable, not a hook name: ignored
        status_detail = property(lambda self: 1 / 0)  # never evaluated

        def on_shutdown(self) -> None:
            pass

    registry.register(Ext())
    assert registry.hooks_of("Ext") == ["on_shutdown"]


# -- same object, same name -----------------------------------------------------------


def test_same_object_twice_is_a_no_op(registry: Registry) -> None:
    calls: list[tuple[str, str]] = []
    ext = Recorder("a", calls)
    assert registry.register(ext) == "a"
    assert registry.register(ext) == "a"
    assert registry.register(ext, name="other") == "a"
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    assert calls == [("a", "on_job_completed")]
    assert len(registry) == 1


def test_a_different_object_under_a_taken_name_is_an_error(registry: Registry) -> None:
    calls: list[tuple[str, str]] = []
    first = Recorder("a", calls)
    registry.register(first)
    with pytest.raises(RegistrationError, match=r"'a' is already taken"):
        registry.register(Recorder("a", calls))
    assert registry.get("a") is first
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    assert calls == [("a", "on_job_completed")]


def test_an_empty_name_is_refused(registry: Registry) -> None:
    with pytest.raises(RegistrationError, match="non-empty"):
        registry.register(Recorder("a", []), name="  ")


# -- unregister -----------------------------------------------------------------------


def test_unregister_takes_effect_from_the_next_emit(registry: Registry) -> None:
    calls: list[str] = []

    class Remover:
        name = "remover"

        def on_job_started(self, job: Job) -> None:
            calls.append("remover")
            if "victim" in registry:
                registry.unregister("victim")

    class Victim:
        name = "victim"

        def on_job_started(self, job: Job) -> None:
            calls.append("victim")

    victim = Victim()
    registry.register(Remover())
    registry.register(victim)

    registry.emit("on_job_started", job=JOB)  # the running emit keeps its call list
    assert calls == ["remover", "victim"]
    registry.emit("on_job_started", job=JOB)
    assert calls == ["remover", "victim", "remover"]
    assert registry.implementers("on_job_started") == ["remover"]
    assert registry.plugin_manager.get_plugin("victim") is None
    # the freed name can be taken again
    assert registry.register(Victim()) == "victim"


def test_unregister_returns_the_extension_and_keeps_its_stats(registry: Registry) -> None:
    calls: list[tuple[str, str]] = []
    ext = Recorder("a", calls)
    registry.register(ext)
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    assert registry.unregister("a") is ext
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    assert registry.stats()["a"]["on_job_completed"].calls == 1


def test_unregister_of_an_unknown_name_says_so(registry: Registry) -> None:
    with pytest.raises(KeyError, match="no extension named 'ghost'"):
        registry.unregister("ghost")


# -- arguments ------------------------------------------------------------------------


def test_implementations_receive_only_the_arguments_they_ask_for(registry: Registry) -> None:
    seen: dict[str, Any] = {}
    next_run = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    error = ValueError("boom")

    class Subsets:
        def on_job_retrying(self, attempt: int, job: Job) -> None:  # any order, by name
            seen["subset"] = (attempt, job)

        def on_job_failed(self) -> None:
            seen["none"] = True

        def on_job_dlq(self, **kwargs: Any) -> None:
            seen["all"] = kwargs

        def on_cron_fired(self, job: Job, *args: Any) -> None:
            seen["varargs"] = (job, args)

    registry.register(Subsets())
    registry.emit("on_job_retrying", job=JOB, error=error, attempt=2, next_run_at=next_run)
    registry.emit("on_job_failed", job=JOB, error=error)
    registry.emit("on_job_dlq", job=JOB, error=error)
    registry.emit("on_cron_fired", entry=None, job=JOB)
    assert seen == {
        "subset": (2, JOB),
        "none": True,
        "all": {"job": JOB, "error": error},
        "varargs": (JOB, ()),
    }


def test_plain_functions_with_defaults_work(registry: Registry) -> None:
    seen: list[object] = []

    class Defaults:
        def on_job_completed(self, job: Job, elapsed: dt.timedelta | None = None) -> None:
            seen.append(elapsed)

        @staticmethod
        def on_job_started(job: Job) -> None:
            seen.append(job.id)

    registry.register(Defaults())
    registry.emit("on_job_started", job=JOB)
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    assert seen == ["j1", ELAPSED]


def test_emit_of_an_unknown_hook_raises_with_a_suggestion(registry: Registry) -> None:
    with pytest.raises(UnknownHookError, match=r"did you mean on_job_completed\?"):
        registry.emit("on_job_complete", job=JOB)
    with pytest.raises(UnknownHookError, match="the hooks are: on_job_enqueued"):
        registry.emit("something_else")
    with pytest.raises(UnknownHookError):
        registry.implementers("on_jobs_done")


def test_emit_with_no_listener_is_a_no_op(registry: Registry) -> None:
    for hook in HOOK_NAMES:
        registry.emit(hook)
    assert registry.stats() == {}


# -- snapshots --------------------------------------------------------------------------


def test_snapshots_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        JOB.name = "other"  # type: ignore[misc]
    assert isinstance(JOB.payload, MappingProxyType)
    with pytest.raises(TypeError):
        JOB.payload["to"] = "b@example.com"  # type: ignore[index]
    assert JOB.payload["tags"] == ("x",)


def test_one_extension_cannot_change_what_the_next_one_sees(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[dict[str, Any]] = []

    class Vandal:
        def on_job_started(self, job: Job) -> None:
            job.payload["to"] = "evil@example.com"

    class Witness:
        def on_job_started(self, job: Job) -> None:
            seen.append(job.to_dict()["payload"])

    registry.register(Vandal())
    registry.register(Witness())
    registry.emit("on_job_started", job=JOB)
    assert seen == [{"to": "a@example.com", "tags": ["x"]}]
    assert "extension 'Vandal' raised in on_job_started: TypeError" in caplog.text
