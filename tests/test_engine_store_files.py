"""Which files the SQLite store accepts, and that it never writes to somebody else's."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, EngineError, NotAStoreError, SQLiteStore, StoreError

NO_CONFIG = Config(autoload=False)


def engine_on(path: Path, **store: Any) -> Engine:
    engine = Engine(store=SQLiteStore(path, **store), autoload=False, config=NO_CONFIG)

    @engine.job("j")
    def j(payload: Any) -> None:
        pass

    return engine


def database(path: Path, *statements: str) -> bytes:
    with closing(sqlite3.connect(path)) as conn, conn:
        for statement in statements:
            conn.execute(statement)
    return path.read_bytes()


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_engine_refuses_a_database_with_other_tables_and_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shop.db"
    before = database(
        path,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY)",
        "INSERT INTO users VALUES (1, 'ada')",
    )
    engine = engine_on(path)

    async def main() -> None:
        with pytest.raises(NotAStoreError) as info:
            await engine.start()
        assert str(info.value) == (
            f"{path} is not a dispatch-ext store (no 'meta' table; it holds other tables "
            "('orders', 'users')); give the engine a database file of its own (a new or "
            "empty one)"
        )
        assert info.value.path == str(path)
        with pytest.raises(NotAStoreError):
            await engine.enqueue("j")  # a producer is refused the same way
        assert not engine.running

    asyncio.run(main())
    assert path.read_bytes() == before
    assert files(tmp_path) == ["shop.db"]  # no -wal or -shm file either


def test_an_empty_or_new_file_becomes_a_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    for path in (empty, tmp_path / "new.db"):
        engine = engine_on(path)

        async def main(engine: Engine = engine) -> dict[str, int]:
            async with engine:
                await engine.enqueue("j")
                await engine.drain(timeout=10)
                return await engine.counts()

        assert asyncio.run(main())["completed"] == 1
        with closing(sqlite3.connect(path)) as conn:
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
            assert version.fetchall() == [("3",)]


def test_another_applications_meta_table_is_not_mistaken_for_a_store(tmp_path: Path) -> None:
    path = tmp_path / "cms.db"
    before = database(
        path,
        "CREATE TABLE meta (name TEXT, content TEXT)",
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT)",
    )
    with pytest.raises(NotAStoreError) as info:
        asyncio.run(engine_on(path).start())
    assert str(info.value).startswith(
        f"{path} is not a dispatch-ext store (its 'meta' table is not a dispatch-ext one; "
        "it holds other tables ('jobs', 'meta')); "
    )
    assert "no 'meta' table" not in str(info.value)
    assert path.read_bytes() == before


def test_a_store_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    engine = engine_on(path)

    async def make() -> None:
        await engine.enqueue("j")
        await engine.stop()

    asyncio.run(make())
    database(path, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=r"schema version 99, newer than .*upgrade dispatch-ext"):
        asyncio.run(engine_on(path).start())


def test_a_file_that_is_not_a_database_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("garbage\n")
    with pytest.raises(StoreError) as info:
        asyncio.run(engine_on(path).start())
    assert not isinstance(info.value, NotAStoreError)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, EngineError)
    assert (
        str(info.value)
        == f"cannot use {str(path)!r} as a dispatch-ext store: file is not a database"
    )
    assert path.read_text() == "garbage\n"
    assert files(tmp_path) == ["notes.db"]


def test_a_reading_store_never_creates_a_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    empty = tmp_path / "empty.db"
    empty.touch()

    async def open_(path: Path) -> None:
        store = SQLiteStore(path, create=False)
        await store.open()
        await store.close()

    with pytest.raises(StoreError, match="the file does not exist"):
        asyncio.run(open_(missing))
    with pytest.raises(NotAStoreError, match=r"\(no 'meta' table; the database is empty\)"):
        asyncio.run(open_(empty))
    assert files(tmp_path) == ["empty.db"]
    assert empty.read_bytes() == b""
