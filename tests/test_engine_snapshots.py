"""The engine's snapshots: built on a fast path, equal to what the dataclasses build."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import pickle
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pytest

from dispatch_ext import Job, JobState, RunState, WorkflowRun
from dispatch_ext.engine.records import JobRecord, RunRecord, fast_constructor, loads
from dispatch_ext.models import CronEntry, freeze

UTC = dt.timezone.utc
NOW = 1_735_812_000.123456  # 2025-01-02T10:00:00.123456Z


def utc(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, UTC)


def expected_job(record: JobRecord, state: JobState | None = None) -> Job:
    """The snapshot ``record`` stands for, through the dataclass's own constructor."""
    return Job(
        id=record.id,
        name=record.name,
        queue=record.queue,
        payload=freeze(json.loads(record.payload)),
        state=record.state if state is None else state,
        priority=record.priority,
        max_retries=record.max_retries,
        retry_count=record.retry_count,
        last_error=record.last_error,
        run_at=utc(record.run_at),
        created_at=utc(record.created_at),
        started_at=utc(record.started_at),
        completed_at=utc(record.completed_at),
        timeout=record.timeout,
    )


def same(built: Any, expected: Any) -> None:
    """``built`` is indistinguishable from ``expected``: type, fields, equality, hash, repr."""
    assert type(built) is type(expected)
    assert dataclasses.is_dataclass(built)
    assert built == expected
    if _hashable(expected):
        assert hash(built) == hash(expected)
    assert repr(built) == repr(expected)
    assert built.to_dict() == expected.to_dict()
    for f in dataclasses.fields(expected):
        assert getattr(built, f.name) == getattr(expected, f.name), f.name
        assert type(getattr(built, f.name)) is type(getattr(expected, f.name)), f.name


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


RECORDS = [
    JobRecord("a1", "send", "null", run_at=NOW, created_at=NOW),
    JobRecord(
        "a2",
        "send",
        '{"to":"ü@example.com","tags":["x",{"y":[1,2.5,null,true]}]}',
        queue="mail",
        state=JobState.RUNNING,
        priority=-3,
        max_retries=0,
        retry_count=2,
        last_error="ValueError: boom",
        run_at=NOW + 60,
        created_at=NOW,
        started_at=NOW + 61,
        completed_at=NOW + 62.5,
        timeout=None,
    ),
    JobRecord("a3", "x", ' [1, "two"] ', run_at=0.0, created_at=0.0, timeout=3.0),
    JobRecord("a4", "x", '"text"', run_at=NOW, created_at=NOW - 1e-6, started_at=NOW),
]


@pytest.mark.parametrize("record", RECORDS, ids=[r.id for r in RECORDS])
def test_a_snapshot_equals_the_one_the_dataclass_builds(record: JobRecord) -> None:
    same(record.snapshot(), expected_job(record))
    same(record.snapshot(JobState.DEAD), expected_job(record, JobState.DEAD))


def test_snapshots_follow_every_change_of_the_record() -> None:
    record = JobRecord("j", "n", '{"k":1}', run_at=NOW, created_at=NOW)
    first = record.snapshot()

    record.state, record.started_at = JobState.RUNNING, NOW + 1
    started = record.snapshot()
    record.state, record.retry_count, record.last_error = JobState.RETRYING, 1, "E: x"
    record.run_at = NOW + 30  # a retry moves run_at; created_at stays
    retrying = record.snapshot()
    record.created_at = NOW - 5  # (a store may load a record and change any field)
    reloaded = record.snapshot()
    record.state, record.completed_at = JobState.COMPLETED, NOW + 31
    completed = record.snapshot()

    same(
        started,
        expected_job(
            JobRecord(
                "j",
                "n",
                '{"k":1}',
                run_at=NOW,
                created_at=NOW,
                state=JobState.RUNNING,
                started_at=NOW + 1,
            )
        ),
    )
    assert first.state is JobState.PENDING
    assert first.started_at is None
    assert retrying.run_at == utc(NOW + 30)
    assert retrying.created_at == utc(NOW)
    assert retrying.retry_count == 1
    assert retrying.last_error == "E: x"
    assert reloaded.created_at == utc(NOW - 5)
    assert reloaded.run_at == utc(NOW + 30)
    same(completed, expected_job(record))
    # Snapshots taken earlier kept what they saw.
    assert started.state is JobState.RUNNING
    assert started.run_at == utc(NOW)


def test_a_copied_record_snapshots_its_own_fields() -> None:
    record = JobRecord("j", "n", "[]", run_at=NOW, created_at=NOW)
    record.snapshot()
    clone = copy.copy(record)
    clone.run_at = NOW + 10
    assert clone.snapshot().run_at == utc(NOW + 10)
    assert record.snapshot().run_at == utc(NOW)


def test_snapshots_stay_frozen_and_deeply_read_only() -> None:
    record = RECORDS[1]
    snapshot = record.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.state = JobState.DEAD  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del snapshot.id  # type: ignore[misc]
    assert isinstance(snapshot.payload, MappingProxyType)
    with pytest.raises(TypeError):
        snapshot.payload["to"] = "x"
    assert snapshot.payload["tags"] == ("x", MappingProxyType({"y": (1, 2.5, None, True)}))
    assert dataclasses.replace(snapshot, retry_count=9).retry_count == 9
    assert copy.copy(snapshot) == snapshot
    thawed = pickle.loads(pickle.dumps(dataclasses.replace(snapshot, payload=None)))
    assert thawed == dataclasses.replace(snapshot, payload=None)


def test_run_snapshots_equal_the_ones_the_dataclass_builds() -> None:
    record = RunRecord(id="r", name="onboard", input='{"user":7}', started_at=NOW)
    same(
        record.snapshot(),
        WorkflowRun(
            id="r",
            name="onboard",
            state=RunState.RUNNING,
            input=freeze({"user": 7}),
            output=None,
            error=None,
            started_at=utc(NOW),
            completed_at=None,
        ),
    )
    record.state, record.output, record.completed_at = RunState.COMPLETED, "[1,2]", NOW + 2
    same(
        record.snapshot(),
        WorkflowRun(
            "r",
            "onboard",
            RunState.COMPLETED,
            freeze({"user": 7}),
            (1, 2),
            None,
            utc(NOW),
            utc(NOW + 2),
        ),
    )


@pytest.mark.parametrize("cls", [Job, WorkflowRun, CronEntry])
def test_the_fast_constructor_builds_what_the_class_builds(cls: type[Any]) -> None:
    build = fast_constructor(cls)
    values = [object() for _ in dataclasses.fields(cls)]
    built, expected = build(*values), cls(*values)
    assert type(built) is cls
    for f, value in zip(dataclasses.fields(cls), values, strict=True):
        assert getattr(built, f.name) is value
    assert built == expected
    assert repr(built) == repr(expected)
    with pytest.raises(TypeError):
        build(*values[:-1])  # every field is required, positionally


def test_the_fast_constructor_refuses_classes_whose_init_does_more() -> None:
    @dataclass(frozen=True, slots=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            if self.value < 0:
                raise ValueError("negative")

    @dataclass(frozen=True, slots=True)
    class Computed:
        value: int
        double: int = field(init=False, default=0)

    @dataclass(frozen=True)
    class NoSlots:
        value: int

    for cls in (Checked, Computed, NoSlots):
        with pytest.raises(TypeError, match=cls.__qualname__):
            fast_constructor(cls)


@pytest.mark.parametrize(
    "text",
    [
        "5",
        "-0.5e3",
        '"ü\\n"',
        "null",
        "true",
        '{"a":[1,{"b":null}]}',
        "[]",
        " 7",
        "7 ",
        "\n{}\t",
        "1e400",
        "NaN",
        "-Infinity",
        '"\\ud83d\\ude00"',
    ],
)
def test_loads_reads_what_json_loads_reads(text: str) -> None:
    value = loads(text)
    expected = json.loads(text)
    assert value == expected or (value != value and expected != expected)  # NaN
    assert type(value) is type(expected)


@pytest.mark.parametrize("text", ["", " ", "5x", "[1,]", "{'a':1}", "[1] [2]", "nul"])
def test_loads_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as refused:
        loads(text)
    assert str(refused.value) == str(expected.value)
