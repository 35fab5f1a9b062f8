"""A short `make chaos`: the stack under worker, notifier and scheduler SIGKILLs and a Redis
SIGKILL, sending tasks over REST the whole time; nothing lost, stuck, or misreported."""

from __future__ import annotations

from pathlib import Path

from chaos.run import Options, run


async def test_chaos_smoke_loses_nothing_and_tells_no_lies(tmp_path: Path) -> None:
    opts = Options(seconds=20, rate=8, seed=7, smoke=True, folder=tmp_path, drain_timeout=90)
    findings, report, table = await run(opts)
    print(table)
    assert findings.acknowledged >= 150
    assert not findings.lost and not findings.stuck, report
    assert not findings.lies and not findings.wrong_outcome and not findings.undelivered, report
    assert not findings.server_errors, report
    assert findings.final["completed"] + findings.final["failed"] == findings.acknowledged
    assert findings.recovery_seconds, "no killed consumer held a task: nothing was measured"
    assert max(findings.recovery_seconds) < 10, findings.recovery_seconds
