"""Schedule definitions and ticks (SPEC section 12), with an injected clock: cron and interval
parsing, the next tick, and the DST rule of shared/schedules.py (Europe/Berlin and
America/New_York, a spring-forward and a fall-back each)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from shared import registry
from shared.schedules import ScheduleBody, next_cron_tick, next_tick

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TASK = {"type": "image", "payload": {"x": 1}}


def at(text: str, tz: ZoneInfo = BERLIN, fold: int = 0) -> int:
    """Epoch ms of a wall time in `tz`."""
    return int(datetime.fromisoformat(text).replace(tzinfo=tz, fold=fold).timestamp() * 1000)


def ticks(expr: str, start: int, count: int, tz: ZoneInfo = BERLIN) -> list[str]:
    """The next `count` ticks after `start`, as local ISO times with their offset."""
    out, now = [], start
    for _ in range(count):
        now = next_cron_tick(expr, tz, now)
        out.append(datetime.fromtimestamp(now / 1000, tz).isoformat())
    return out


def body(**fields: Any) -> ScheduleBody:
    return ScheduleBody.model_validate({"task": TASK, **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {"cron": "*/5 * * * *"},
        {"cron": "0 30 2 * * *"},  # 6 fields, seconds first
        {"cron": "0 9 * * MON-FRI", "timezone": "America/New_York"},
        {"interval_seconds": 1},
        {"interval_seconds": 30, "paused": True},
    ],
)
def test_valid_definitions(fields: dict[str, Any]) -> None:
    assert body(**fields).task.type == "image"


@pytest.mark.parametrize(
    "fields",
    [
        {},  # neither rule
        {"cron": "* * * * *", "interval_seconds": 5},  # both
        {"cron": "61 * * * *"},
        {"cron": "* * * *"},  # 4 fields
        {"cron": "* * * * * * *"},  # 7 fields
        {"cron": "0 0 30 2 *"},  # never fires (February 30th)
        {"cron": "@daily"},
        {"interval_seconds": 0},
        {"interval_seconds": 1.5},
        {"interval_seconds": "5"},
        {"cron": "* * * * *", "timezone": "Mars/Olympus"},
        {"cron": "* * * * *", "timezone": "../etc/passwd"},
        {"cron": "* * * * *", "task": {"type": "image"}},  # payload missing
        {"cron": "* * * * *", "extra": 1},
    ],
)
def test_invalid_definitions(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        body(**fields)


def test_cron_ticks_are_strictly_after_now_and_in_the_time_zone() -> None:
    assert ticks("*/5 * * * *", at("2026-06-01T10:02:59"), 2) == [
        "2026-06-01T10:05:00+02:00",
        "2026-06-01T10:10:00+02:00",
    ]
    # On a tick exactly: the next one, never the same one again.
    assert ticks("*/5 * * * *", at("2026-06-01T10:05:00"), 1) == ["2026-06-01T10:10:00+02:00"]
    assert ticks("*/2 * * * * *", at("2026-06-01T10:00:00.500"), 2) == [
        "2026-06-01T10:00:02+02:00",
        "2026-06-01T10:00:04+02:00",
    ]
    assert ticks("0 9 * * *", at("2026-06-01T08:00:00", NEW_YORK), 1, NEW_YORK) == [
        "2026-06-01T09:00:00-04:00"
    ]


def test_interval_ticks_keep_their_grid_and_skip_missed_ones() -> None:
    rule = {"interval_seconds": 10}
    assert next_tick(rule, 1_000) == 11_000  # first tick: one interval from now
    assert next_tick(rule, 11_003, fired_ms=11_000) == 21_000  # no drift from lateness
    # Fired an hour late (no scheduler ran): once, then on the grid after now.
    assert next_tick(rule, 3_611_500, fired_ms=11_000) == 3_621_000


def test_spring_forward_a_skipped_wall_time_fires_once_at_the_end_of_the_gap() -> None:
    # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that night.
    assert ticks("30 2 * * *", at("2026-03-28T12:00:00"), 3) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # Several wall times in the gap fire together once, at 03:00, then on as usual.
    assert ticks("0,20,40 2,3 * * *", at("2026-03-29T01:00:00"), 4) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:20:00+02:00",
        "2026-03-29T03:40:00+02:00",
        "2026-03-30T02:00:00+02:00",
    ]
    # New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    assert ticks("15 2 * * *", at("2026-03-07T12:00:00", NEW_YORK), 2, NEW_YORK) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:15:00-04:00",
    ]


def test_fall_back_a_repeated_wall_time_fires_once() -> None:
    # Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    assert ticks("30 2 * * *", at("2026-10-24T12:00:00"), 3) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    # A scheduler asking during the second 02:xx (after the first 02:30 fired) waits a day.
    second_pass = at("2026-10-25T02:10:00", fold=1)
    assert ticks("30 2 * * *", second_pass, 1) == ["2026-10-26T02:30:00+01:00"]
    # 6 fields with seconds follow the same rule.
    assert ticks("0 30 1 * * *", at("2026-10-31T12:00:00", NEW_YORK), 2, NEW_YORK) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]


def test_elapsed_time_expressions_run_on_real_time_through_a_change() -> None:
    # '*/20' in the minute field: every 20 real minutes, both passes of the repeated hour.
    assert ticks("*/20 * * * *", at("2026-10-25T01:50:00"), 5) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:20:00+02:00",
        "2026-10-25T02:40:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:20:00+01:00",
    ]
    # And nothing in the skipped hour: 01:45 CET is followed by 03:00 CEST.
    assert ticks("*/15 * * * *", at("2026-03-29T01:40:00"), 2) == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",
    ]


def test_periodic_declares_a_schedule_and_registers_its_handler() -> None:
    @registry.periodic("unit.nightly", cron="0 3 * * *", timezone="Europe/Berlin", queue="low")
    def nightly(payload: Any, ctx: registry.TaskContext) -> None:
        return None

    try:
        declared = {p.name: p for p in registry.periodic_schedules()}["unit.nightly"]
        assert declared.body["task"] == {"type": "unit.nightly", "payload": None, "queue": "low"}
        assert registry.get("unit.nightly") is not None
        ScheduleBody.model_validate(declared.body)
    finally:  # other tests list the known types
        registry._registry.pop("unit.nightly", None)
        registry._periodic.pop("unit.nightly", None)
    with pytest.raises(ValueError):
        registry.periodic("unit.bad", cron="* * * * *", interval_seconds=5)
