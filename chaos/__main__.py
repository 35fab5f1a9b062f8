"""`python -m chaos --seconds 120 --rate 20 --seed 1` (see chaos/__init__.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from chaos.report import combined_markdown
from chaos.run import Options, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--seconds", type=float, default=120, help="how long to send tasks")
    parser.add_argument("--rate", type=float, default=20, help="tasks per second")
    parser.add_argument("--seed", type=int, default=1, help="seeds the task mix and the faults")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument(
        "--redis",
        choices=["standalone", "cluster", "sentinel"],
        default="standalone",
        help="one server with AOF (restarted), a 6-node Redis Cluster or a Sentinel setup "
        "(primaries SIGKILLed and failed over)",
    )
    parser.add_argument(
        "--wait-replicas",
        type=int,
        default=0,
        help="REDIS_WAIT_REPLICAS for the stack (cluster and sentinel only)",
    )
    parser.add_argument(
        "--appendfsync",
        choices=["always", "everysec", "no"],
        default="everysec",
        help="standalone only",
    )
    parser.add_argument("--drain-timeout", type=float, default=180)
    parser.add_argument("--smoke", action="store_true", help="fewer faults (for make test)")
    parser.add_argument("--folder", type=Path, help="keep Redis data and logs here")
    parser.add_argument(
        "--json",
        type=Path,
        help="write the full report as JSON here (cluster, sentinel: a file of runs, one per "
        "--wait-replicas; this run replaces its own and keeps the others)",
    )
    parser.add_argument(
        "--markdown", type=Path, help="write the figures here (cluster, sentinel: every run)"
    )
    args = parser.parse_args(argv)
    if args.redis == "standalone" and args.wait_replicas:
        parser.error("--wait-replicas needs a replica: use --redis cluster or sentinel")
    if args.wait_replicas < 0:
        parser.error("--wait-replicas must be 0 or more")
    opts = Options(
        seconds=args.seconds,
        rate=args.rate,
        seed=args.seed,
        workers=args.workers,
        appendfsync=args.appendfsync,
        drain_timeout=args.drain_timeout,
        smoke=args.smoke,
        folder=args.folder,
        redis=args.redis,
        wait_replicas=args.wait_replicas,
    )
    findings, report, table = asyncio.run(run(opts))
    print(table)
    names = ("lost", "stuck", "wrong_outcome", "lies", "undelivered", "server_error_samples")
    for name in ("lost_unreplicated", *names) if args.redis != "standalone" else names:
        for line in report[name][:20]:
            print(f"{name}: {line}")
    if args.redis == "standalone":
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        if args.markdown:
            args.markdown.write_text(table)
    else:
        runs = _runs(args.json, args.redis)
        runs[f"REDIS_WAIT_REPLICAS={args.wait_replicas}"] = report
        if args.json:
            document = {"topology": args.redis, "runs": runs}
            args.json.write_text(json.dumps(document, indent=2) + "\n")
        if args.markdown:
            args.markdown.write_text(combined_markdown(args.redis, runs))
    return 1 if findings.failed() else 0


def _runs(path: Path | None, topology: str) -> dict[str, dict[str, Any]]:
    """The runs already in a topology's JSON file (none if it is absent or of another kind)."""
    if path is None or not path.exists():
        return {}
    try:
        document = json.loads(path.read_text())
    except ValueError:
        return {}
    if not isinstance(document, dict) or document.get("topology") != topology:
        return {}
    return dict(document.get("runs", {}))


if __name__ == "__main__":
    sys.exit(main())
