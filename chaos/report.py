"""The figures of a run: a Markdown table (for docs/chaos.md and the README) and JSON; on a
replicated Redis also the failovers, and one page holding a run with WAIT off and one on."""

from __future__ import annotations

from typing import Any

from chaos.verify import Findings, percentile

DEFINITIONS = [
    "- **failover**: `CLUSTER FAILOVER` on a replica (a planned switch: the replica catches up "
    "first); **failover-global**: the same on the shard holding `{_global}` (queue registry, "
    "heartbeats). **primary-kill**: SIGKILL of a primary on loopback; the replica is promoted, "
    "the old primary is started again 1 s later, empty, and returns as a replica. "
    "**primary-kill-partitioned**: the same, but the replica is first cut off for 1 s (its link "
    "dropped, its resync refused), as a network or host failure leaves a replica behind. On the "
    "cluster, primaries are killed only on shards without `{_global}` (README, Scaling).",
    "- **lost to an unreplicated failover**: an acknowledged create that is gone (404) after "
    "the first SIGKILL of its queue's primary that followed its acknowledgement, acknowledged "
    "no later than 1 s after the kill and before the promotion. With REDIS_WAIT_REPLICAS=0 this "
    "is the loss window, measured and not a failure; with WAIT on, it fails the run. Any other "
    "loss always fails it.",
    "- **unreplicated bytes at the kill**: the primary's replication offset minus its "
    "replica's, read just before the SIGKILL (the replica's first: an upper bound). "
    "**longest pause between acknowledged creates**: "
    "the longest gap between two acknowledged creates on the failed primary's queues around "
    "the fault (it includes the client's back-off, up to 2 s).",
]

REDIS_FAULT_COLUMNS = (
    ("planned s", "planned_s"),
    ("fault", "kind"),
    ("primary -> replica", "target"),
    ("its queues", "queues"),
    ("replica cut off for", "cut_off_s"),
    ("unreplicated bytes at the kill (at most)", "unreplicated_bytes_at_kill"),
    ("replica promoted after", "promoted_after_s"),
    ("old primary back (as replica) after", "down_s"),
    ("creates acknowledged while cut off", "creates_acknowledged_while_cut_off"),
    ("**acknowledged creates lost**", "acknowledged_creates_lost"),
    (
        "longest pause between acknowledged creates on its queues",
        "longest_gap_between_acknowledged_creates_s",
    ),
)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def figures(f: Findings) -> list[tuple[str, str]]:
    rec = f.recovery_seconds
    errors_5xx = sum(f.server_errors.values())
    rows = [
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
        ("**5xx answers** outside Redis outages (a 500 at any time)", f"{errors_5xx}"),
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
    if f.topology == "standalone":
        return rows
    lost = len(f.lost_unreplicated)
    verdict = (
        "WAIT on: any is a failure"
        if f.wait_replicas
        else "WAIT off: the loss window, measured; not a failure"
    )
    rows.insert(
        5,
        (
            "**lost to an unreplicated failover** (acknowledged, then gone with a SIGKILLed "
            "primary that had not replicated it)",
            f"{lost} ({verdict})",
        ),
    )
    duplicates = next(i for i, (name, _) in enumerate(rows) if name.startswith("duplicate"))
    rows[duplicates] = (
        rows[duplicates][0],
        f"{f.duplicate_deliveries} ({f.duplicates_across_failover} first sent before a "
        "failover and again after it)",
    )
    outage = next(i for i, (name, _) in enumerate(rows) if name.startswith("503"))
    rows[outage] = (
        "503 (or dropped) answers while a primary was down, failing over or cut off from its "
        "replica (retried by the client)",
        f"{f.outage_503}",
    )
    return rows


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, float):
        return f"{value:g} s"
    return str(value)


def redis_fault_table(faults: list[dict[str, Any]]) -> list[str]:
    """The failovers of a run, one row each (service SIGKILLs are left out)."""
    rows = [f for f in faults if str(f["kind"]).startswith(("primary", "failover"))]
    lines = [
        "| " + " | ".join(name for name, _ in REDIS_FAULT_COLUMNS) + " |",
        "|" + "---|" * len(REDIS_FAULT_COLUMNS),
    ]
    for row in rows:
        cells = [_cell(row.get(key)) for _, key in REDIS_FAULT_COLUMNS]
        if row.get("note"):
            cells[1] += f" ({row['note']})"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict_rule(f: Findings) -> str:
    rule = (
        "non-zero exit on any loss, stuck task, wrong outcome, lie, undelivered completed "
        "email or 5xx outside a Redis outage"
    )
    if f.topology != "standalone" and not f.wait_replicas:
        rule += "; with REDIS_WAIT_REPLICAS=0 a create lost with an unreplicated primary is "
        rule += "counted apart and is not one"
    return rule


def markdown(
    f: Findings, settings: dict[str, Any], faults: list[dict[str, Any]] | None = None
) -> str:
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in figures(f)]
    if f.topology != "standalone" and faults:
        lines += ["", *redis_fault_table(faults)]
    lines += ["", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in settings.items()]
    verdict = "FAILED" if f.failed() else "passed"
    lines += ["", f"Verdict: **{verdict}** ({verdict_rule(f)})."]
    return "\n".join(lines) + "\n"


def combined_markdown(topology: str, runs: dict[str, dict[str, Any]]) -> str:
    """One page for a replicated topology: its runs (WAIT off, WAIT on) side by side, then
    each run's failovers and settings."""
    names = sorted(runs)
    title = {"cluster": "Redis Cluster", "sentinel": "Redis Sentinel"}.get(topology, topology)
    lines = [
        f"# make chaos on {title}",
        "",
        f"`make chaos CHAOS_REDIS={topology} CHAOS_WAIT_REPLICAS=<n>` rewrites its own run "
        "here and keeps the other. Written by chaos/report.py; the figures shared with the "
        "standalone run are defined in docs/chaos.md.",
        "",
        *DEFINITIONS,
        "",
        "| figure | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    order: list[str] = []
    for name in names:
        order += [key for key in runs[name]["figures"] if key not in order]
    for key in order:
        cells = [str(runs[name]["figures"].get(key, "-")) for name in names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("| verdict | " + " | ".join(runs[n]["verdict"] for n in names) + " |")
    for name in names:
        run = runs[name]
        lines += ["", f"## {name}: failovers", "", *redis_fault_table(run["faults"])]
        if run.get("lost_unreplicated"):
            lines += ["", "Acknowledged creates lost with a primary:", ""]
            lines += [f"- {line}" for line in run["lost_unreplicated"][:50]]
        kinds = ("lost", "stuck", "wrong_outcome", "lies", "server_error_samples")
        others = [(k, run[k]) for k in kinds if run.get(k)]
        for label, items in others:
            lines += ["", f"{label}:", "", *[f"- {item}" for item in items[:20]]]
        lines += ["", f"## {name}: settings", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in run["settings"].items()]
        lines += ["", f"Verdict: **{run['verdict']}** ({run['verdict_rule']})."]
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
    } | (
        {}
        if f.topology == "standalone"
        else {
            "topology": f.topology,
            "wait_replicas": f.wait_replicas,
            "lost_unreplicated": f.lost_unreplicated,
            "verdict": "FAILED" if f.failed() else "passed",
            "verdict_rule": verdict_rule(f),
        }
    )
