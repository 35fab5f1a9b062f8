"""One chaos run: start everything, load + faults, drain, check, report."""

from __future__ import annotations

import asyncio
import itertools
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos import faults as fx
from chaos.load import Load, Sent
from chaos.report import as_json, markdown
from chaos.sink import MailSink
from chaos.stack import ROOT, Launcher, free_port
from chaos.topology import PARTITION_SECONDS, Engine, open_engine
from chaos.verify import (
    ACK_SLACK_SECONDS,
    Findings,
    check_counts,
    check_mail,
    check_task,
    drain,
    fetch_details,
    recovery_times,
    unreplicated_kill,
)


@dataclass
class Options:
    seconds: float = 120.0
    rate: float = 20.0
    seed: int = 1
    workers: int = 3
    appendfsync: str = "everysec"
    drain_timeout: float = 180.0
    smoke: bool = False
    folder: Path | None = None
    image_seconds: float = 1.0
    smtp_delay: float = 0.1
    redis: str = "standalone"  # standalone | cluster | sentinel
    wait_replicas: int = 0  # REDIS_WAIT_REPLICAS for the stack (replicated Redis only)


def settings_table(opts: Options, engine: Engine) -> dict[str, Any]:
    replicated = opts.redis != "standalone"
    topology = f" --redis {opts.redis} --wait-replicas {opts.wait_replicas}" if replicated else ""
    table = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"python -m chaos --seconds {opts.seconds:g} --rate {opts.rate:g} "
        f"--seed {opts.seed}" + topology + (" --smoke" if opts.smoke else ""),
        "stack": f"make run topology: api, {opts.workers} workers, scheduler, notifier, dashboard",
        "redis": engine.describe(),
        "service settings": "defaults (HEARTBEAT_SECONDS 1, DEAD_AFTER_SECONDS 4, "
        "TASK_LEASE_SECONDS 30); IMAGE_TASK_SECONDS " + f"{opts.image_seconds:g}",
        "mail sink": f"aiosmtpd on 127.0.0.1, {opts.smtp_delay * 1000:g} ms per message",
        "task mix": "40% email (one address each), 25% image, 10% sum, 10% sleep 2 s, "
        "10% flaky (recovers), 5% flaky (fails by design); 15% scheduled 1-8 s ahead",
        "machine": f"{platform.machine()}, {_cpus()} cores, Python {platform.python_version()}",
    }
    if replicated:
        table["commit"] = _commit()
        table["REDIS_WAIT_REPLICAS"] = (
            f"{opts.wait_replicas}: a create is answered 201 only once a replica holds it "
            "(WAIT, REDIS_WAIT_TIMEOUT_MS 500), else 503 and the client retries"
            if opts.wait_replicas
            else "0: a create is answered 201 as soon as the primary ran it"
        )
        table["queues"] = (
            ", ".join(engine.queues) + " (one on each primary; every worker serves all three, "
            "WORKER_QUEUES weights 1:1:1)"
            if engine.queues
            else "default"
        )
        table["primary kills"] = (
            "SIGKILL; the replica is promoted; the old primary is started again "
            "(empty, as a replica) 1 s after the promotion. primary-kill-partitioned: the "
            f"replica is first cut off from its primary for {PARTITION_SECONDS:g} s (its "
            "link dropped and its resync refused), as a network or host failure would leave it"
        )
    return table


def _commit() -> str:
    """HEAD, and whether the tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


async def run(opts: Options) -> tuple[Findings, dict[str, Any], str]:
    folder = opts.folder or Path(tempfile.mkdtemp(prefix="chaos-"))
    passed = False
    try:
        with (
            MailSink(free_port(), opts.smtp_delay) as sink,
            open_engine(opts.redis, folder, opts.appendfsync, opts.wait_replicas) as engine,
        ):
            extra = {"IMAGE_TASK_SECONDS": f"{opts.image_seconds:g}", **engine.stack_env()}
            if opts.redis != "standalone":
                extra["REDIS_WAIT_REPLICAS"] = str(opts.wait_replicas)
            launcher = Launcher(folder / "stack", engine.url, sink.port, opts.workers, extra)
            try:
                launcher.start()
                findings, faults = await _exercise(opts, engine, launcher, sink)
                settings = settings_table(opts, engine)
                settings["faults injected"] = ", ".join(
                    f"{kind} x{n}" for kind, n in Counter(f.kind for f in faults if f.at).items()
                )
                settings["stop after the run"] = f"{launcher.stop():.1f} s (Ctrl-C)"
                passed = not findings.failed()
                return (
                    findings,
                    as_json(findings, settings, fx.describe(faults)),
                    markdown(findings, settings, fx.describe(faults)),
                )
            finally:
                launcher.stop()
                if not passed:
                    engine.keep_logs(folder / "redis-logs")
    finally:
        if passed and opts.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"logs and Redis data kept in {folder}", flush=True)


async def _exercise(
    opts: Options, engine: Engine, launcher: Launcher, sink: MailSink
) -> tuple[Findings, list[fx.Fault]]:
    load = Load(launcher.base_url, opts.seed, engine.queues)
    faults = fx.schedule(opts.seconds, opts.seed, smoke=opts.smoke, topology=opts.redis)
    runner = fx.FaultRunner(engine, faults, opts.seed)
    stop = threading.Event()
    started = time.monotonic()
    injector = asyncio.create_task(asyncio.to_thread(runner.run, started, stop))
    try:
        await load.run(opts.seconds, opts.rate)
        await injector
    finally:
        stop.set()
    f = Findings(wait_replicas=opts.wait_replicas, topology=opts.redis)
    acked = [s for s in load.sent if s.task_id]
    f.acknowledged, f.unacknowledged = len(acked), len(load.sent) - len(acked)
    f.replayed = sum(1 for s in acked if s.created_status == 200)
    drained, f.stats, f.drain_seconds = await drain(
        launcher.base_url, len(acked), opts.drain_timeout
    )
    windows = fx.outage_windows(faults)
    for answer in load.answers:
        if answer.status >= 500 and answer.status != 503:
            f.server_errors[answer.status] += 1  # a 500 is a bug, in an outage or not
        elif answer.status >= 500 or answer.status == 0:
            if fx.during_outage(answer.at, windows):
                f.outage_503 += 1
            else:
                f.server_errors[answer.status] += 1
    ids = [s.task_id for s in acked if s.task_id]
    details = await fetch_details(launcher.base_url, ids, f.server_error_samples)
    for sample in f.server_error_samples:
        f.server_errors[int(sample.split()[2].rstrip(":"))] += 1
    f.server_error_samples += load.errors[:20]  # counted above, from the answers
    with engine.client() as client:
        for sent in acked:
            found = details[sent.task_id or ""]
            killed_by = unreplicated_kill(sent, faults) if found is None else None
            if killed_by is not None:
                killed_by.lost += 1
                lead = killed_by.at - (sent.acknowledged_at or 0.0)
                when = f"{abs(lead):.2f} s {'before' if lead >= 0 else 'after'}"
                f.lost_unreplicated.append(
                    f"{sent.task_id} ({sent.type}, queue {sent.queue}): {sent.created_status} "
                    f"after {sent.tries} tries, {when} the SIGKILL of {killed_by.target}; "
                    "gone after it"
                )
                continue
            check_task(sent, found, f, client)
        statuses = {tid: d["task"]["status"] for tid, d in details.items() if d}
        check_mail(acked, statuses, sink.deliveries, f)
        expected = len(acked) - len(f.lost_unreplicated)
        check_counts(f.stats, expected, f, client, engine.queues or None)
    _window_figures(faults, acked)
    if opts.redis != "standalone":
        f.duplicates_across_failover = _duplicates_across_failover(faults, sink.delivery_times)
    if not drained:
        f.lies += [] if f.stuck or f.lost else ["stats never showed a drained queue"]
    f.recovery_seconds = recovery_times(faults, details)
    if runner.errors:
        f.lies += [f"fault not injected: {error}" for error in runner.errors]
    return f, faults


def _duplicates_across_failover(faults: list[fx.Fault], times: dict[str, list[float]]) -> int:
    """Duplicate emails whose first delivery came before a failover and the next one after
    it, within the time the consumers take to find and re-run an unfinished task."""
    count = 0
    for sent_at in times.values():
        for first, again in itertools.pairwise(sorted(sent_at)):
            count += any(
                first <= f.at <= again <= (f.back_at or f.at) + 60
                for f in faults
                if f.is_redis and f.at
            )
    return count


def _window_figures(faults: list[fx.Fault], acked: list[Sent]) -> None:
    """Per failover: the creates acknowledged while the replica was cut off (what WAIT off
    exposes), and the longest pause between acknowledged creates on the primary's queues."""
    for fault in faults:
        if not (fault.kind.startswith(("primary", "failover")) and fault.at):
            continue
        times = sorted(
            s.acknowledged_at for s in acked if s.acknowledged_at and s.queue in fault.queues
        )
        if fault.cut_at:
            until = min(fault.at + ACK_SLACK_SECONDS, fault.promoted_at or float("inf"))
            fault.acked_unreplicated = sum(1 for t in times if fault.cut_at <= t <= until)
        start, end = fault.cut_at or fault.at, fault.back_at or fault.at
        gaps = [b - a for a, b in itertools.pairwise(times) if b >= start and a <= end]
        fault.writes_gap = max(gaps, default=None)
