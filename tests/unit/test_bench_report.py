"""The benchmark report: the worker's CPU budget (issue 17) beside the peers' comparison."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import report


def _sample(system: str, metric: str, value: float) -> dict[str, Any]:
    return {"system": system, "metric": metric, "config": "", "value": value, "unit": "us/task"}


def _report(ours: float, huey: float) -> tuple[dict[str, Any], str]:
    rows = report.aggregate(
        [_sample("ours", "worker_cpu_3x1", ours), _sample("huey", "worker_cpu_3x1", huey)]
    )
    comps = report.comparisons(rows)
    return comps["worker_cpu_3x1"], report.table(rows, ["ours", "huey"], {"ours": comps})


def test_a_row_behind_the_best_peer_can_still_be_within_its_budget() -> None:
    entry, table = _report(ours=380.0, huey=320.0)
    assert entry["met"] is False
    assert entry["budget"] == report.WORKER_CPU_BUDGET_3X1
    assert entry["within_budget"] is True
    row = next(line for line in table.splitlines() if "worker CPU per task, drain 3 x 1" in line)
    assert f"budget <= {report.WORKER_CPU_BUDGET_3X1:g} us/task" in row
    assert row.endswith("| **no** (budget: yes) |")


def test_a_row_over_its_budget_says_so_even_when_ahead_of_the_peers() -> None:
    over = report.WORKER_CPU_BUDGET_3X1 + 1
    entry, table = _report(ours=over, huey=over + 100)
    assert entry["met"] is True
    assert entry["within_budget"] is False
    row = next(line for line in table.splitlines() if "worker CPU per task, drain 3 x 1" in line)
    assert row.endswith("| yes (budget: **no**) |")


def test_only_the_worker_cpu_rows_carry_a_budget() -> None:
    budgeted = {m.key for m in report.METRICS if m.budget is not None}
    assert budgeted == {"worker_cpu_3x1", "worker_cpu_high"}
    rows = report.aggregate([_sample("ours", "redis_cpu_3x1", 150.0)])
    assert "budget" not in report.comparisons(rows)["redis_cpu_3x1"]
