"""complete_claim.lua: a consumer reports its finished runs and takes its next tasks in one
call (claim_or_offer with `completed`). Each half does what complete.lua and claim.lua do
alone: fencing, exact counts, and the queue's pause and max_concurrency."""

from __future__ import annotations

from shared import queries, queue_control, transitions
from shared.queue_control import QueueLimits
from shared.redis import Conn
from shared.settings import Settings
from shared.transitions import Claimed, ClaimReply, Outcome
from tests.support.commandstats import command_calls, script_calls
from tests.support.seed import assert_consistent, counts, seed_tasks


async def claim(
    conn: Conn,
    settings: Settings,
    count: int,
    completed: list[Outcome] = [],  # noqa: B006
) -> ClaimReply:
    return await transitions.claim_or_offer(
        conn,
        "work",
        count,
        worker="Worker 1",
        owner="w-1",
        lease_seconds=30,
        completed=completed,
        settings=settings,
    )


def done(run: Claimed, result: object = None) -> Outcome:
    return Outcome(run.task.id, run.token, True, result)


async def test_one_call_completes_the_finished_run_and_claims_the_next(
    conn: Conn, settings: Settings
) -> None:
    first, second, third = await seed_tasks(conn, settings, count=3)
    [run] = (await claim(conn, settings, 1)).claimed
    assert run.task.id == first.id
    calls = await script_calls(conn)
    reply = await claim(conn, settings, 1, [done(run, {"n": 1})])
    assert await script_calls(conn) - calls == 1
    assert reply.codes == ["ok"]
    assert [c.task.id for c in reply.claimed] == [second.id]
    finished = await queries.get_task(conn, first.id)
    assert finished.status == "completed" and finished.result == {"n": 1}
    assert await conn.redis.zscore(conn.keys.leases, first.id) is None
    assert await conn.redis.smembers(conn.keys.held("w-1")) == {second.id}
    assert await counts(conn) == {"total": 3, "completed": 1, "processing": 1, "pending": 1}
    await assert_consistent(conn)
    assert third.status == "pending"


async def test_a_stale_or_missing_outcome_is_refused_and_the_claim_still_happens(
    conn: Conn, settings: Settings
) -> None:
    first, second = await seed_tasks(conn, settings, count=2)
    [run] = (await claim(conn, settings, 1)).claimed
    stale = Outcome(first.id, run.token + "x", True, "from a lost run")
    missing = Outcome("no-such-task", "t", True, None)
    reply = await claim(conn, settings, 1, [stale, missing])
    assert reply.codes == ["stale", "missing"]
    assert [c.task.id for c in reply.claimed] == [second.id]
    assert (await queries.get_task(conn, first.id)).status == "processing"  # not written
    assert await counts(conn) == {"total": 2, "processing": 2}
    await assert_consistent(conn)


async def test_the_slot_a_completion_frees_counts_under_max_concurrency(
    conn: Conn, settings: Settings
) -> None:
    await queue_control.set_limits(conn, "default", QueueLimits(max_concurrency=1))
    first, second, _ = await seed_tasks(conn, settings, count=3)
    at_cap = await claim(conn, settings, 2)
    [run] = at_cap.claimed
    assert at_cap.retry_at_ms is not None  # one of the two wanted: the queue is at its cap
    reply = await claim(conn, settings, 1, [done(run)])
    assert reply.codes == ["ok"] and [c.task.id for c in reply.claimed] == [second.id]
    assert reply.retry_at_ms is None  # it got all it wanted
    assert await counts(conn) == {"total": 3, "completed": 1, "processing": 1, "pending": 1}
    await assert_consistent(conn)
    assert first.id == run.task.id


async def test_a_paused_queue_still_takes_the_report_but_starts_nothing(
    conn: Conn, settings: Settings
) -> None:
    first, _ = await seed_tasks(conn, settings, count=2)
    [run] = (await claim(conn, settings, 1)).claimed
    await queue_control.pause(conn, "default")
    reply = await claim(conn, settings, 1, [done(run, 7)])
    assert reply.codes == ["ok"] and reply.paused and reply.claimed == []
    assert (await queries.get_task(conn, first.id)).result == 7
    assert await counts(conn) == {"total": 2, "completed": 1, "pending": 1}
    await assert_consistent(conn)


async def test_one_call_pops_the_ready_lists_once_and_reads_the_config_once(
    conn: Conn, settings: Settings
) -> None:
    """The budget of a busy single-slot worker's call: the tasks wait at the default priority,
    below two empty ready lists, and one LMPOP still finds the next; the queue's controls,
    read for the completion's slot announcement, serve the claim too."""
    first, second, _ = await seed_tasks(conn, settings, count=3)
    [run] = (await claim(conn, settings, 1)).claimed
    pops = await command_calls(conn, "lpop", "lmpop")
    config_reads = await command_calls(conn, "hget")
    reply = await claim(conn, settings, 1, [done(run)])
    assert [c.task.id for c in reply.claimed] == [second.id]
    # Redis 6.2 has no LMPOP (nor Functions): an LPOP per list, down to the third.
    assert await command_calls(conn, "lpop", "lmpop") - pops == (1 if conn.use_functions else 3)
    assert await command_calls(conn, "hget") - config_reads == 0
    assert first.priority == 3


async def test_every_count_keeps_the_throughput_key_expiring(
    conn: Conn, settings: Settings
) -> None:
    """The histogram's key gets its TTL from each second's first count, not from every call:
    after several completions in a row it still expires within the hour."""
    tasks = await seed_tasks(conn, settings, count=4)
    [run] = (await claim(conn, settings, 1)).claimed
    for _ in tasks[1:]:
        [run] = (await claim(conn, settings, 1, [done(run)])).claimed
    await claim(conn, settings, 0, [done(run)])
    keys = [key async for key in conn.redis.scan_iter(match=conn.keys.throughput(0)[:-1] + "*")]
    assert keys
    for key in keys:
        assert 0 < await conn.redis.ttl(key) <= 3600
    completed = 0
    for key in keys:
        completed += sum(int(count) for count in (await conn.redis.hgetall(key)).values())
    assert completed == 4


async def test_the_processing_count_stays_exact_however_ends_and_starts_pair_up(
    conn: Conn, settings: Settings
) -> None:
    """complete_claim writes processing once for its ends and starts together: two ends and one
    start, an end whose dependent is released and started in the same call, and a last end
    with nothing left to start each leave the counters exact."""
    first, second, third = await seed_tasks(conn, settings, count=3)
    runs = (await claim(conn, settings, 2)).claimed
    assert [run.task.id for run in runs] == [first.id, second.id]
    reply = await claim(conn, settings, 1, [done(run) for run in runs])
    assert reply.codes == ["ok", "ok"] and [c.task.id for c in reply.claimed] == [third.id]
    assert await counts(conn) == {"total": 3, "completed": 2, "processing": 1}
    await assert_consistent(conn)

    [dependent] = await seed_tasks(conn, settings, depends_on=[third.id])
    assert dependent.status == "waiting"
    reply = await claim(conn, settings, 1, [done(reply.claimed[0])])
    assert [c.task.id for c in reply.claimed] == [dependent.id]
    assert await counts(conn) == {"total": 4, "completed": 3, "processing": 1}
    await assert_consistent(conn)

    reply = await claim(conn, settings, 1, [done(reply.claimed[0])])
    assert reply.codes == ["ok"] and reply.claimed == []
    assert await counts(conn) == {"total": 4, "completed": 4}
    await assert_consistent(conn)
