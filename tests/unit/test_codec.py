"""A task record decodes to the same Task that pydantic's validation would build.

`decode_task_strict` parses each field to its model type and builds the Task without
validating it a second time (the worker decodes every task it claims). These tests hold that
shortcut to the model: every field present, each value of exactly the model's type (strict
validation accepts it unchanged), and the instance behaving as a validated one does.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared import codec
from shared.models import Task, TaskStatus

CREATED_MS = 1_765_000_000_123

MINIMAL = {
    "id": "0b3d2c1e-8f0a-4c5e-9d7b-2a1f3e4d5c6b",
    "type": "sum",
    "payload": "[1, 2, 3.5]",
    "status": "pending",
    "priority": "3",
    "max_retries": "3",
    "created": str(CREATED_MS),
    "updated": str(CREATED_MS),
}
EVERY_FIELD = {
    **MINIMAL,
    "queue": "media",
    "status": "completed",
    "retry_count": "2",
    "run_at": str(CREATED_MS + 5_000),
    "webhook": "https://example.com/hook",
    "timeout": "2.5",
    "unique_key": "invoice-7",
    "depends_on": "a,b",
    "started": str(CREATED_MS + 6_000),
    "completed": str(CREATED_MS + 7_000),
    "error": "ValueError: once",
    "result": '{"total": 6.5}',
    "progress": "100",
    "progress_message": "done",
    "cancel_requested": "1",
    "schedule": "nightly",
    # Bookkeeping fields of the record that are not the task's: ignored.
    "attempt": "3",
    "token": "3-abc",
    "owner": "worker-1",
}


@pytest.mark.parametrize("fields", [MINIMAL, EVERY_FIELD], ids=["minimal", "every-field"])
def test_a_decoded_task_is_the_task_validation_builds(fields: dict[str, str]) -> None:
    task = codec.decode_task_strict(dict(fields))
    values = vars(task)
    assert list(values) == list(Task.model_fields)  # every field, in the model's order
    # Strict validation takes each value as it is: none needs coercing, so none is of another
    # type than pydantic itself would have made it.
    validated = Task.model_validate(values, strict=True)
    assert task == validated
    assert task.model_dump() == validated.model_dump()
    assert task.model_dump_json() == validated.model_dump_json()
    assert task.model_fields_set == validated.model_fields_set == set(Task.model_fields)


def test_the_decoded_values_are_the_records() -> None:
    task = codec.decode_task_strict(dict(EVERY_FIELD))
    assert task.queue == "media" and task.status is TaskStatus.COMPLETED
    assert task.payload == [1, 2, 3.5] and task.result == {"total": 6.5}
    assert task.retry_count == 2 and task.timeout_seconds == 2.5 and task.progress == 100.0
    assert task.depends_on == ["a", "b"] and task.cancel_requested is True
    assert task.created_at == datetime.fromtimestamp(CREATED_MS / 1000, tz=UTC)
    assert task.scheduled_for is not None and task.scheduled_for.tzinfo is UTC
    minimal = codec.decode_task_strict(dict(MINIMAL))
    assert minimal.queue == "default" and minimal.retry_count == 0
    assert minimal.depends_on == [] and minimal.result is None and minimal.webhook is None


def test_decoded_tasks_are_independent_models() -> None:
    """Copies, assignments and the set of fields given are per instance, as pydantic's."""
    first = codec.decode_task_strict(dict(MINIMAL))
    second = codec.decode_task_strict(dict(MINIMAL))
    first.depends_on.append("x")
    first.model_fields_set.discard("error")
    assert second.depends_on == [] and "error" in second.model_fields_set
    changed = first.model_copy(update={"status": TaskStatus.FAILED})
    assert changed.status is TaskStatus.FAILED and first.status is TaskStatus.PENDING
    first.error = "set later"
    assert first.error == "set later" and second.error is None


@pytest.mark.parametrize(
    ("field", "raw", "problem"),
    [
        ("id", None, "missing"),
        ("type", None, "missing"),
        ("payload", "{not json", "malformed"),
        ("status", "lost", "malformed"),
        ("priority", "high", "malformed"),
        ("max_retries", None, "missing"),
        ("retry_count", "", "malformed"),
        ("run_at", "soon", "malformed"),
        ("timeout", "inf", "malformed"),
        ("created", None, "missing"),
        ("updated", "9" * 30, "malformed"),
        ("started", "noon", "malformed"),
        ("completed", "1.5e3x", "malformed"),
        ("result", "[1,", "malformed"),
        ("progress", "nan", "malformed"),
    ],
)
def test_a_corrupt_record_names_its_field(field: str, raw: str | None, problem: str) -> None:
    fields = {k: v for k, v in EVERY_FIELD.items() if k not in (field, "error")}
    if raw is not None:
        fields[field] = raw
    with pytest.raises(codec.CorruptRecord, match=f"field '{field}' is {problem}"):
        codec.decode_task_strict(fields)
    salvaged = codec.decode_task(fields)  # readers get what can be read, and the problem
    assert f"field '{field}' is {problem}" in (salvaged.error or "")


def test_optional_fields_left_empty_read_as_absent() -> None:
    empty = dict.fromkeys(("run_at", "timeout", "started", "completed", "result", "progress"), "")
    task = codec.decode_task_strict({**MINIMAL, **empty, "webhook": "", "error": ""})
    assert task == codec.decode_task_strict(dict(MINIMAL))
