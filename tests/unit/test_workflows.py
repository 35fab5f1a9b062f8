"""Graph validation of SPEC section 11 (shared/workflows.py): refs, order, cycles. No I/O."""

from __future__ import annotations

from typing import Any

import pytest

from shared import workflows
from shared.errors import ValidationFailed
from shared.models import TaskCreate

A = "3f1c9d2e-0000-4000-8000-00000000000a"


def items(*specs: dict[str, Any]) -> tuple[list[TaskCreate], list[dict[str, Any]]]:
    creates = [TaskCreate(type="noop", payload=i, **spec) for i, spec in enumerate(specs)]
    return creates, [{"id": f"id-{i}"} for i in range(len(creates))]


def link(*specs: dict[str, Any]) -> list[dict[str, Any]]:
    creates, built = items(*specs)
    workflows.link(creates, built, batch=True)
    return built


def refused(*specs: dict[str, Any]) -> ValidationFailed:
    creates, built = items(*specs)
    with pytest.raises(ValidationFailed) as caught:
        workflows.link(creates, built, batch=True)
    return caught.value


def test_a_chain_a_fan_out_and_a_fan_in_resolve_refs_to_new_ids() -> None:
    built = link(
        {"ref": "root"},
        {"ref": "left", "depends_on": ["root"]},
        {"ref": "right", "depends_on": ["root"]},
        {"depends_on": ["left", "right", "left"]},  # a repeat counts once
    )
    assert "depends_on" not in built[0]
    assert built[1]["depends_on"] == ["id-0"] and built[2]["depends_on"] == ["id-0"]
    assert built[3]["depends_on"] == ["id-1", "id-2"]


def test_existing_ids_pass_through_and_mix_with_refs() -> None:
    built = link({"ref": "a"}, {"depends_on": [A, "a"]})
    assert built[1]["depends_on"] == [A, "id-0"]


def test_a_single_create_names_ids_only() -> None:
    creates, built = items({"depends_on": [A]})
    workflows.link(creates, built, batch=False)
    assert built[0]["depends_on"] == [A]
    creates, built = items({"depends_on": ["nope"]})
    with pytest.raises(ValidationFailed) as caught:
        workflows.link(creates, built, batch=False)
    assert caught.value.details[0]["loc"] == ["body", "depends_on", 0]


def test_duplicate_ref_is_refused() -> None:
    error = refused({"ref": "x"}, {"ref": "x"})
    assert "unique" in error.message and error.details[0]["loc"] == ["body", "tasks", 1, "ref"]


def test_unknown_ref_is_refused() -> None:
    error = refused({"ref": "x"}, {"depends_on": ["y"]})
    assert "'y'" in error.message
    assert error.details[0]["loc"] == ["body", "tasks", 1, "depends_on", 0]


def test_a_cycle_is_named() -> None:
    error = refused(
        {"ref": "a", "depends_on": ["c"]},
        {"ref": "b", "depends_on": ["a"]},
        {"ref": "c", "depends_on": ["b"]},
    )
    assert "cycle" in error.message and error.details[0]["msg"] == "cycle"
    cycle = error.details[0]["cycle"]
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_a_task_naming_itself_is_a_cycle() -> None:
    assert "cycle: a -> a" in refused({"ref": "a", "depends_on": ["a"]}).message


def test_a_ref_of_a_later_item_is_refused() -> None:
    error = refused({"depends_on": ["later"]}, {"ref": "later"})
    assert "later item" in error.message


def test_a_long_chain_is_checked_without_recursion() -> None:
    specs: list[dict[str, Any]] = [{"ref": "n0"}]
    specs += [{"ref": f"n{i}", "depends_on": [f"n{i - 1}"]} for i in range(1, 5000)]
    built = link(*specs)
    assert built[-1]["depends_on"] == ["id-4998"]
    specs[0] = {"ref": "n0", "depends_on": ["n4999"]}
    assert "cycle" in refused(*specs).message


def test_create_fields_are_checked() -> None:
    with pytest.raises(ValueError):
        TaskCreate(type="noop", payload=1, ref="has space")
    with pytest.raises(ValueError):
        TaskCreate(type="noop", payload=1, depends_on=[A] * 1001)
