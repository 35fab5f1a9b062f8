"""One key contract: the Lua scripts name every key exactly as shared/keys.py does.

`queue_keys` in shared/scripts/_lib.lua builds the scripts' names from the queue key each
script gets as KEYS[1]; this runs it on a real Redis and compares every name it can build
with the Python builder's, and checks that no script builds a key of its own.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from shared import keys
from shared.keys import PRIORITIES, Keys, Lane
from shared.models import TaskStatus
from shared.redis import SCRIPT_NAMES, Conn

SCRIPTS = resources.files("shared") / "scripts"
QUEUES = ["default", "media", "a-b_9"]
TASK_ID = "3f1c9d2e-0000-4000-8000-00000000abcd"
OWNER = "worker-host-1-7f3a"
TASK_TYPE = "resize.image:v2"  # a type name may hold '.' and ':'

# Each Lua expression (with Q = queue_keys(KEYS[1])) and the Python name it must equal.
CONTRACT = [
    ("Q.counts", lambda k: k.counts),
    ("Q.leases", lambda k: k.leases),
    ("Q.delayed", lambda k: k.delayed),
    ("Q.expiry", lambda k: k.expiry),
    ("Q.outbox", lambda k: k.outbox),
    ("Q.config", lambda k: k.config),
    ("Q.index_all", lambda k: k.index_all),
    ("Q.skips", lambda k: k.ready_skips),
    ("Q.parked_lists", lambda k: k.parked_lists),
    ("Q.events_channel", lambda k: k.events_channel),
    ("Q:task(ID)", lambda k: k.task(TASK_ID)),
    ("Q:events(ID)", lambda k: k.task_events(TASK_ID)),
    ("Q:deliveries(ID)", lambda k: k.task_deliveries(TASK_ID)),
    ("Q:dependents(ID)", lambda k: k.task_dependents(TASK_ID)),
    ("Q.cascade", lambda k: k.cascade),
    ("Q.metrics", lambda k: k.metrics),
    ("Q:held(OWNER)", lambda k: k.held(OWNER)),
    ("Q:inbox(OWNER)", lambda k: k.inbox(OWNER)),
    ("Q:delivery('msg_1')", lambda k: k.delivery("msg_1")),
    ("Q:idempotency('k1:x')", lambda k: k.idempotency("k1:x")),
    ("Q:unique('sync user:42')", lambda k: k.unique("sync user:42")),
    ("Q:throughput(29933760)", lambda k: k.throughput(29933760)),
    ("Q:schedule_fence('nightly.report-1')", lambda k: k.schedule_fence("nightly.report-1")),
    ("Q:wake('outbox')", lambda k: k.wake("outbox")),
    *(
        (f"Q:{name}('{lane}')", lambda k, name=name, lane=lane: getattr(k, name)(lane))
        for lane in Lane
        for name in ("idle", "offers", "wake")
    ),
    *(
        (f"Q:index('{status}')", lambda k, status=status: k.index_status(status))
        for status in TaskStatus
    ),
    *(
        (f"Q:ready('{lane}', {p})", lambda k, lane=lane, p=p: k.ready(lane, p))
        for lane in Lane
        for p in PRIORITIES
    ),
    *(
        (f"Q:parked('{lane}', {p}, TYPE)", lambda k, lane=lane, p=p: k.parked(lane, p, TASK_TYPE))
        for lane in Lane
        for p in PRIORITIES
    ),
]


def _lua_names(anchor: str) -> str:
    lines = ",\n".join(expression for expression, _ in CONTRACT)
    return (
        (SCRIPTS / "_lib.lua").read_text()
        + f"\nlocal ID, OWNER, TYPE = '{TASK_ID}', '{OWNER}', '{TASK_TYPE}'\n"
        + f"local Q = queue_keys({anchor})\n"
        + "return {Q.queue, EVENTS_CHANNEL, QUEUE_CONTROL_CHANNEL, SCHEDULER_WAKE_CHANNEL,\n"
        + f"{lines}}}"
    )


@pytest.mark.parametrize("queue", QUEUES)
async def test_lua_builds_every_key_as_keys_py_does(conn: Conn, queue: str) -> None:
    k = Keys(queue)
    expected = [queue, keys.EVENTS_CHANNEL, keys.QUEUE_CONTROL_CHANNEL, keys.SCHEDULER_WAKE_CHANNEL]
    expected += [build(k) for _, build in CONTRACT]
    # Any key of the queue anchors the builder: each script passes a different one.
    for anchor in (k.counts, k.task(TASK_ID), k.delivery("msg_1"), k.config):
        built = await conn.redis.eval(_lua_names("KEYS[1]"), 1, anchor)
        mismatched = [
            (expression, lua, python)
            for (expression, _), lua, python in zip(
                [("Q.queue", None), ("channels", None), ("", None), ("", None), *CONTRACT],
                built,
                expected,
                strict=True,
            )
            if lua != python
        ]
        assert mismatched == [], f"anchored on {anchor}"


async def test_lua_builds_the_schedule_keys_as_keys_py_does(conn: Conn) -> None:
    """schedule_keys in _lib.lua, anchored on any schedule key, names what keys.py names;
    and every schedule key shares one hash tag, which no queue can have."""
    name = "nightly.report-1"
    script = (SCRIPTS / "_lib.lua").read_text() + (
        f"\nlocal S = schedule_keys(KEYS[1])\nreturn {{S.due, S.all, S.schedule('{name}')}}"
    )
    expected = [keys.SCHEDULES_DUE, keys.SCHEDULES_ALL, keys.schedule(name)]
    for anchor in expected:
        assert await conn.redis.eval(script, 1, anchor) == expected
    assert all(key.startswith("tq:{_schedules}:") for key in expected)


def test_the_contract_covers_every_key_builder() -> None:
    """queue_keys lists the QueueKeys builders one by one (one table constructor per script
    call): a builder added to _lib.lua but left out of it, or out of CONTRACT, fails here or
    in the test above, not in some script that calls it."""
    builders = set(
        re.findall(r"^function QueueKeys:(\w+)\(", (SCRIPTS / "_lib.lua").read_text(), re.M)
    )
    covered = {m for expression, _ in CONTRACT for m in re.findall(r"^Q:(\w+)\(", expression)}
    assert builders and builders == covered


def test_every_queue_key_carries_the_queue_hash_tag() -> None:
    for queue in QUEUES:
        k = Keys(queue)
        for _, build in CONTRACT:
            assert build(k).startswith(f"tq:{{{queue}}}:")


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_scripts_name_keys_only_through_the_builder(name: str) -> None:
    """Outside _lib.lua no script spells a key: no 'tq:' literal and no concatenated key
    part such as `.. 'task:'`; and its KEYS[1] is documented as one of its queue's keys."""
    source = (SCRIPTS / f"{name}.lua").read_text()
    code = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    assert "tq:" not in code
    assert re.findall(r"\.\.\s*'[a-z_]+:", code) == []
    # A schedule script's keys are the schedules' own (SPEC section 12), not a queue's.
    tag = r"\{_schedules\}" if name.startswith("schedule_") else r"\{q\}"
    assert re.search(rf"^-- KEYS\[1\] -> tq:{tag}:", source, re.MULTILINE), name


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_scripts_take_no_prefixes_or_channels_as_arguments(name: str) -> None:
    """What the layout fixes (prefixes, channel names) is not an argument any more."""
    header = "\n".join(
        line
        for line in (SCRIPTS / f"{name}.lua").read_text().splitlines()
        if line.startswith("-- ARGV")
    )
    assert not re.search(r"prefix|channel|layout", header), header


@pytest.mark.parametrize("name", ["_global", "-x", "Media", "a}b"])
def test_queue_name_setting_cannot_take_the_global_tag_or_break_a_tag(name: str) -> None:
    from pydantic import ValidationError

    from shared.settings import Settings

    with pytest.raises(ValidationError):
        Settings(queue_name=name, _env_file=None)
