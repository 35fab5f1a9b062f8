"""`python -m chaos --seconds 120 --rate 20 --seed 1` (see chaos/__init__.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from chaos.run import Options, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--seconds", type=float, default=120, help="how long to send tasks")
    parser.add_argument("--rate", type=float, default=20, help="tasks per second")
    parser.add_argument("--seed", type=int, default=1, help="seeds the task mix and the faults")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--appendfsync", choices=["always", "everysec", "no"], default="everysec")
    parser.add_argument("--drain-timeout", type=float, default=180)
    parser.add_argument("--smoke", action="store_true", help="fewer faults (for make test)")
    parser.add_argument("--folder", type=Path, help="keep Redis data and logs here")
    parser.add_argument("--json", type=Path, help="write the full report as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the figures table here")
    args = parser.parse_args(argv)
    opts = Options(
        seconds=args.seconds,
        rate=args.rate,
        seed=args.seed,
        workers=args.workers,
        appendfsync=args.appendfsync,
        drain_timeout=args.drain_timeout,
        smoke=args.smoke,
        folder=args.folder,
    )
    findings, report, table = asyncio.run(run(opts))
    print(table)
    for name in ("lost", "stuck", "wrong_outcome", "lies", "undelivered", "server_error_samples"):
        for line in report[name][:20]:
            print(f"{name}: {line}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    return 1 if findings.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
