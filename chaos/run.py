"""One chaos run: start everything, load + faults, drain, check, report."""

from __future__ import annotations

import asyncio
import platform
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos import faults as fx
from chaos.load import Load
from chaos.report import as_json, markdown
from chaos.sink import MailSink
from chaos.stack import Launcher, RedisProcess, free_port
from chaos.verify import (
    Findings,
    check_counts,
    check_mail,
    check_task,
    drain,
    fetch_details,
    recovery_times,
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


def settings_table(opts: Options, redis: RedisProcess) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"python -m chaos --seconds {opts.seconds:g} --rate {opts.rate:g} "
        f"--seed {opts.seed}" + (" --smoke" if opts.smoke else ""),
        "stack": f"make run topology: api, {opts.workers} workers, scheduler, notifier, dashboard",
        "redis": f"{redis.version()}, appendonly yes, appendfsync {opts.appendfsync}",
        "service settings": "defaults (HEARTBEAT_SECONDS 1, DEAD_AFTER_SECONDS 4, "
        "TASK_LEASE_SECONDS 30); IMAGE_TASK_SECONDS " + f"{opts.image_seconds:g}",
        "mail sink": f"aiosmtpd on 127.0.0.1, {opts.smtp_delay * 1000:g} ms per message",
        "task mix": "40% email (one address each), 25% image, 10% sum, 10% sleep 2 s, "
        "10% flaky (recovers), 5% flaky (fails by design); 15% scheduled 1-8 s ahead",
        "machine": f"{platform.machine()}, {_cpus()} cores, Python {platform.python_version()}",
    }


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


async def run(opts: Options) -> tuple[Findings, dict[str, Any], str]:
    folder = opts.folder or Path(tempfile.mkdtemp(prefix="chaos-"))
    redis = RedisProcess(folder / "redis", appendfsync=opts.appendfsync)
    passed = False
    with MailSink(free_port(), opts.smtp_delay) as sink:
        redis.start()
        extra = {"IMAGE_TASK_SECONDS": f"{opts.image_seconds:g}"}
        launcher = Launcher(folder / "stack", redis.url, sink.port, opts.workers, extra)
        try:
            launcher.start()
            findings, faults = await _exercise(opts, redis, launcher, sink)
            settings = settings_table(opts, redis)
            settings["faults injected"] = ", ".join(
                f"{kind} x{n}" for kind, n in Counter(f.kind for f in faults if f.at).items()
            )
            settings["stop after the run"] = f"{launcher.stop():.1f} s (Ctrl-C)"
            passed = not findings.failed()
            return (
                findings,
                as_json(findings, settings, fx.describe(faults)),
                markdown(findings, settings),
            )
        finally:
            launcher.stop()
            redis.stop()
            if passed and opts.folder is None:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                print(f"logs and Redis data kept in {folder}", flush=True)


async def _exercise(
    opts: Options, redis: RedisProcess, launcher: Launcher, sink: MailSink
) -> tuple[Findings, list[fx.Fault]]:
    load = Load(launcher.base_url, opts.seed)
    faults = fx.schedule(opts.seconds, opts.seed, smoke=opts.smoke)
    runner = fx.FaultRunner(redis, faults, opts.seed)
    stop = threading.Event()
    started = time.monotonic()
    injector = asyncio.create_task(asyncio.to_thread(runner.run, started, stop))
    try:
        await load.run(opts.seconds, opts.rate)
        await injector
    finally:
        stop.set()
    f = Findings()
    acked = [s for s in load.sent if s.task_id]
    f.acknowledged, f.unacknowledged = len(acked), len(load.sent) - len(acked)
    f.replayed = sum(1 for s in acked if s.created_status == 200)
    drained, f.stats, f.drain_seconds = await drain(
        launcher.base_url, len(acked), opts.drain_timeout
    )
    windows = fx.outage_windows(faults)
    for answer in load.answers:
        if answer.status >= 500 or answer.status == 0:
            if fx.during_outage(answer.at, windows):
                f.outage_503 += 1
            else:
                f.server_errors[answer.status] += 1
    ids = [s.task_id for s in acked if s.task_id]
    details = await fetch_details(launcher.base_url, ids, f.server_error_samples)
    for sample in f.server_error_samples:
        f.server_errors[int(sample.split()[2].rstrip(":"))] += 1
    with redis.client() as client:
        for sent in acked:
            check_task(sent, details[sent.task_id or ""], f, client)
        statuses = {tid: d["task"]["status"] for tid, d in details.items() if d}
        check_mail(acked, statuses, sink.deliveries, f)
        check_counts(f.stats, len(acked), f, client)
    if not drained:
        f.lies += [] if f.stuck or f.lost else ["stats never showed a drained queue"]
    f.recovery_seconds = recovery_times(faults, details)
    if runner.errors:
        f.lies += [f"fault not injected: {error}" for error in runner.errors]
    return f, faults
