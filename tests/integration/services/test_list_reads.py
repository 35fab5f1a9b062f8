"""Task listing reads only what a page needs from Redis, and pages stay exact while it does.

Bytes are measured with Redis's own counter of what it sent (INFO `total_net_output_bytes`),
so the test sees every reply, however the reads are spelled.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared import codec, queries, transitions
from shared.models import TaskStatus
from shared.redis import Conn
from shared.settings import Settings
from tests.support.seed import create, ensure_test_types

BIG = {"blob": "x" * 32_000}  # about half the API's 64 KiB payload cap
RECORD_BYTES = 33_000  # one such task record, as HGETALL sends it


async def _enqueue(
    conn: Conn, settings: Settings, count: int, at_ms: int, **fields: Any
) -> list[str]:
    ensure_test_types()
    ids: list[str] = []
    for start in range(0, count, 500):
        batch = [create(**fields) for _ in range(min(500, count - start))]
        tasks, _ = await transitions.enqueue(conn, batch, settings, now_ms=at_ms)
        ids += [task.id for task in tasks]
    return ids


async def _sent_bytes(conn: Conn) -> int:
    return int((await conn.redis.info("stats"))["total_net_output_bytes"])


async def _newest_first(conn: Conn, ids: list[str]) -> list[str]:
    """`ids` in listing order: created time descending, then id descending (ZREVRANGE)."""
    wanted = set(ids)
    return [i for i in await conn.redis.zrevrange(conn.keys.index_all, 0, -1) if i in wanted]


async def _all_pages(conn: Conn, limit: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(1000):
        page = await queries.list_tasks(conn, limit=limit, cursor=cursor, **filters)
        assert len(page.tasks) <= limit
        seen += [task.id for task in page.tasks]
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("the pages never ended")


async def test_type_filter_does_not_read_records_of_other_types(
    conn: Conn, settings: Settings
) -> None:
    now = codec.now_ms()
    images = await _enqueue(conn, settings, 5, now - 60_000, type="image")
    await _enqueue(conn, settings, 200, now, payload=BIG)  # newer, another type, large

    before = await _sent_bytes(conn)
    page = await queries.list_tasks(conn, task_type="image", limit=5)
    sent = await _sent_bytes(conn) - before

    assert [task.id for task in page.tasks] == await _newest_first(conn, images)
    # Walking past 200 large records of another type costs their ids and types, not them.
    assert sent < 3 * RECORD_BYTES, f"{sent} bytes read for a page of 5 small tasks"


@pytest.mark.parametrize("status", [None, TaskStatus.PENDING], ids=["all", "status"])
async def test_a_page_reads_only_its_own_records(
    conn: Conn, settings: Settings, status: TaskStatus | None
) -> None:
    await _enqueue(conn, settings, 120, codec.now_ms(), payload=BIG)

    before = await _sent_bytes(conn)
    page = await queries.list_tasks(conn, status=status, limit=5)
    sent = await _sent_bytes(conn) - before

    assert len(page.tasks) == 5 and page.next_cursor
    assert sent < 7 * RECORD_BYTES, f"{sent} bytes read for a page of 5 records"


async def test_filtered_pages_are_exact_across_equal_times_and_chunks(
    conn: Conn, settings: Settings
) -> None:
    now = codec.now_ms()
    images: list[str] = []
    everything: list[str] = []
    # Whole batches share one created ms: paging must split runs of equal scores exactly.
    for n in range(6):
        kind = "image" if n % 2 else "noop"
        ids = await _enqueue(conn, settings, 70, now - 1000 * n, type=kind)
        everything += ids
        images += ids if kind == "image" else []
    [cancelled] = await _enqueue(conn, settings, 1, now - 500, type="image")
    await transitions.cancel(conn, cancelled, settings)
    everything.append(cancelled)

    assert await _all_pages(conn, 13) == await _newest_first(conn, everything)
    expected_images = await _newest_first(conn, [*images, cancelled])
    for limit in (1, 7, 50, 500):
        assert await _all_pages(conn, limit, task_type="image") == expected_images, limit
    pending_images = await _newest_first(conn, images)
    assert await _all_pages(conn, 9, task_type="image", status=TaskStatus.PENDING) == (
        pending_images
    )
    assert await _all_pages(conn, 9, task_type="email") == []


async def test_a_long_walk_past_other_types_ends_with_a_cursor(
    conn: Conn, settings: Settings
) -> None:
    now = codec.now_ms()
    [image] = await _enqueue(conn, settings, 1, now - 1000, type="image")
    await _enqueue(conn, settings, queries.MAX_SCAN_FOR_FILTER + 100, now)

    first = await queries.list_tasks(conn, task_type="image", limit=5)
    assert first.tasks == [] and first.next_cursor  # the walk stopped at its cap
    second = await queries.list_tasks(conn, task_type="image", limit=5, cursor=first.next_cursor)
    assert [task.id for task in second.tasks] == [image] and second.next_cursor is None


async def test_a_cursor_is_given_only_when_more_tasks_remain(
    conn: Conn, settings: Settings
) -> None:
    """SPEC section 3: the next-page cursor comes 'when more remain'. A page that ends on the
    last task, filled or not, has none, so no client follows it to an empty page."""
    now = codec.now_ms()
    images = await _enqueue(conn, settings, 6, now - 1000, type="image")
    others = await _enqueue(conn, settings, 6, now, queue="other")
    for limit, filters in [
        (1, {}),
        (3, {}),
        (4, {}),
        (12, {}),
        (2, {"task_type": "image"}),
        (3, {"task_type": "image", "status": TaskStatus.PENDING}),
        (6, {"queue": "other"}),
        (3, {"queue": "other"}),
    ]:
        pages: list[int] = []
        cursor: str | None = None
        while True:
            page = await queries.list_tasks(conn, limit=limit, cursor=cursor, **filters)
            pages.append(len(page.tasks))
            cursor = page.next_cursor
            if cursor is None:
                break
        expected = len(others) if "queue" in filters else len(images)
        if not filters:  # every queue
            expected = len(images) + len(others)
        assert sum(pages) == expected, (limit, filters, pages)
        assert 0 not in pages, f"an empty page after a cursor: {limit=} {filters=} {pages}"
