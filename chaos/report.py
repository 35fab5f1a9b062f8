"""The figures of a run: a Markdown table (for docs/chaos.md and the README) and JSON."""

from __future__ import annotations

from typing import Any

from chaos.verify import Findings, percentile


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def figures(f: Findings) -> list[tuple[str, str]]:
    rec = f.recovery_seconds
    errors_5xx = sum(f.server_errors.values())
    return [
        ("acknowledged creates (201, or 200 replay of an unanswered one)", f"{f.acknowledged}"),
        ("  of which acknowledged by an idempotent replay", f"{f.replayed}"),
        ("creates never acknowledged (gave up after 90 s)", f"{f.unacknowledged}"),
        (
            "final: completed / failed (as designed) / cancelled",
            f"{f.final['completed']} / {f.final['failed']} / {f.final['cancelled']}",
        ),
        ("**lost** (gone, or in a state nothing will move)", f"{len(f.lost)}"),
        ("**stuck** (not final after the drain timeout)", f"{len(f.stuck)}"),
        ("**wrong outcome** (e.g. failed though its handler succeeds)", f"{len(f.wrong_outcome)}"),
        ("**completed without their email delivered**", f"{len(f.undelivered)}"),
        (
            "**lies** (stats that do not add up, double completions, wrong results)",
            f"{len(f.lies)}",
        ),
        ("**5xx answers** outside Redis outages", f"{errors_5xx}"),
        (
            "503 (or dropped) answers while Redis was down (retried by the client)",
            f"{f.outage_503}",
        ),
        ("duplicate email deliveries (beyond one per task)", f"{f.duplicate_deliveries}"),
        ("emails to addresses of no task", f"{f.unattributed_deliveries}"),
        (
            "runs beyond the designed ones (at-least-once re-runs)",
            f"{f.extra_runs} (on {f.tasks_run_twice} tasks)",
        ),
        ("killed consumers' tasks measured for recovery", f"{len(rec)}"),
        (
            "time from a consumer's death to its task's next start: p50 / p99 / max",
            f"{_seconds(percentile(rec, 0.5))} / {_seconds(percentile(rec, 0.99))} / "
            f"{_seconds(max(rec) if rec else None)}",
        ),
        ("drain after the load stopped", f"{f.drain_seconds:.1f} s"),
    ]


def markdown(f: Findings, settings: dict[str, Any]) -> str:
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in figures(f)]
    lines += ["", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in settings.items()]
    verdict = "FAILED" if f.failed() else "passed"
    lines += [
        "",
        f"Verdict: **{verdict}** (non-zero exit on any loss, stuck task, wrong "
        "outcome, lie, undelivered completed email or 5xx outside a Redis outage).",
    ]
    return "\n".join(lines) + "\n"


def as_json(f: Findings, settings: dict[str, Any], faults: list[dict[str, Any]]) -> dict[str, Any]:
    rec = f.recovery_seconds
    return {
        "settings": settings,
        "faults": faults,
        "figures": dict(figures(f)),
        "recovery_seconds": sorted(round(r, 3) for r in rec),
        "lost": f.lost,
        "stuck": f.stuck,
        "wrong_outcome": f.wrong_outcome,
        "lies": f.lies,
        "undelivered": f.undelivered,
        "server_errors": dict(f.server_errors),
        "server_error_samples": f.server_error_samples[:50],
        "stats": f.stats,
        "failed": f.failed(),
    }
