"""The `taskqueue` command line (SPEC section 13): its arguments, and its exit codes.

Every subcommand but `run` and `worker` talks to the REST API through `shared.client`;
those two start services (`python -m services.stack`, `python -m services.worker`) by exec.

Exit codes: 0 ok; 1 the task failed (it ended failed or cancelled) or the API refused the
action (409, 401, 403, ...); 2 usage (bad arguments, or a 400: invalid input); 3 not found;
4 unavailable (the API cannot be reached, or answers 503); 5 `wait` timed out; 141 stdout
was closed early (`taskqueue list | head -2`): the command stops quietly, as a tool that
SIGPIPE stopped does (128 + 13), with no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from services.cli import commands, output
from shared.client import (
    DEFAULT_URL,
    ApiError,
    Client,
    NotFound,
    Unavailable,
    ValidationFailed,
    WaitTimeout,
)

OK, FAILED, USAGE, NOT_FOUND, UNAVAILABLE, TIMED_OUT = 0, 1, 2, 3, 4, 5
BROKEN_PIPE = 141  # what a shell reports for a tool killed by SIGPIPE (128 + 13)
STATUSES = (
    "waiting",
    "scheduled",
    "pending",
    "processing",
    "retrying",
    "completed",
    "failed",
    "cancelled",
)

EPILOG = f"""\
environment: TASKQUEUE_URL (default {DEFAULT_URL}), TASKQUEUE_API_KEY.
exit codes: 0 ok, 1 the task failed or the action was refused, 2 usage or invalid input,
3 not found, 4 API unavailable, 5 wait timed out, 141 stdout closed early.
"""


def _connection_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """--url, --api-key and --json, before the subcommand or after it (scripts do both)."""
    # The command's own environment: not service settings, so not shared.settings.
    default = argparse.SUPPRESS
    parser.add_argument(
        "--url",
        default=os.environ.get("TASKQUEUE_URL", DEFAULT_URL) if top else default,
        help="the API's root URL (TASKQUEUE_URL; default %(default)s)" if top else "as above",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TASKQUEUE_API_KEY") if top else default,
        help="sent as Authorization: Bearer KEY (TASKQUEUE_API_KEY)" if top else "as above",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else default,
        help="machine-readable output on stdout",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskqueue",
        description="Talk to the task queue's REST API, or start its services.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_options(parser, top=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, top=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    p = add("enqueue", "create a task")
    p.add_argument("type", help="task type, e.g. email, image, or a plugin's")
    p.add_argument(
        "payload",
        nargs="?",
        default=None,
        help="JSON payload; text that is not JSON is sent as a string (default: null)",
    )
    p.add_argument("--payload-file", metavar="PATH", help="read the JSON payload (- for stdin)")
    p.add_argument("--priority", type=int, help="1..5, 5 most urgent (default 3)")
    p.add_argument("--max-retries", type=int, help="0..10 (default 2)")
    p.add_argument("--at", dest="scheduled_for", help="run at this RFC 3339 time (with offset)")
    p.add_argument("--delay", type=float, metavar="SECONDS", help="run this many seconds from now")
    p.add_argument("--webhook", help="URL POSTed when the task ends completed or failed")
    p.add_argument("--timeout-seconds", type=float, help="the handler's time limit")
    p.add_argument("--queue", help="named queue (default: the type's, else default)")
    p.add_argument("--unique-key", help="refuse (409) while a live task of the queue has it")
    p.add_argument(
        "--depends-on", action="append", metavar="ID", help="wait for this task (repeatable)"
    )
    p.add_argument("--idempotency-key", help="default: a fresh uuid (safe to retry)")
    p.add_argument("--wait", action="store_true", help="then wait for it to finish (as `wait`)")
    p.add_argument("--timeout", type=float, help="with --wait: give up after SECONDS (exit 5)")
    p.set_defaults(handler=commands.enqueue)

    p = add("get", "show a task")
    p.add_argument("id")
    p.add_argument("--details", action="store_true", help="with attempts, events, dependencies")
    p.set_defaults(handler=commands.get)

    p = add("list", "list tasks, newest first")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--type")
    p.add_argument("--queue")
    p.add_argument("--limit", type=int, default=20, help="tasks shown (1..500, default 20)")
    p.add_argument("--cursor", help="go on after a previous page (its X-Next-Cursor)")
    p.add_argument("--all", action="store_true", help="every matching task, page after page")
    p.set_defaults(handler=commands.list_tasks)

    p = add("wait", "wait until a task is completed (exit 0), failed or cancelled (exit 1)")
    p.add_argument("id")
    p.add_argument("--timeout", type=float, help="give up after SECONDS (exit 5)")
    p.set_defaults(handler=commands.wait)

    p = add("cancel", "cancel a task (a running one is interrupted)")
    p.add_argument("id")
    p.set_defaults(handler=commands.cancel)

    p = add("retry", "run a failed or cancelled task again, with a fresh retry budget")
    p.add_argument("id")
    p.set_defaults(handler=commands.retry)

    p = add("stats", "exact counts per status")
    p.add_argument("--queue", help="one queue's counts")
    p.set_defaults(handler=commands.stats)

    p = add("queues", "list queues (or show one)")
    p.add_argument("name", nargs="?")
    p.set_defaults(handler=commands.queues)

    for verb in ("pause", "resume"):
        p = add(verb, f"{verb} a queue" + (": start none of its tasks" if verb == "pause" else ""))
        p.add_argument("queue")
        p.set_defaults(handler=commands.pause if verb == "pause" else commands.resume)

    p = add("schedules", "list recurring schedules, or act on one")
    p.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=("list", "show", "pause", "resume", "trigger", "delete"),
    )
    p.add_argument("name", nargs="?", help="the schedule (for every action but list)")
    p.set_defaults(handler=commands.schedules)

    p = sub.add_parser("run", help="start the whole stack (what `make run` starts)")
    p.set_defaults(handler=None)

    p = sub.add_parser("worker", help="start one worker process")
    p.add_argument(
        "--queues",
        help="WORKER_QUEUES: * (every queue), critical,default,low (strict order) "
        "or critical:6,default:3 (weights)",
    )
    p.add_argument("--concurrency", type=int, help="WORKER_CONCURRENCY: tasks run at once")
    p.set_defaults(handler=None)
    return parser


def _start(args: argparse.Namespace) -> int:
    """Replace this process with the service (signals then reach it directly)."""
    env = dict(os.environ)
    module = "services.stack"
    if args.command == "worker":
        module = "services.worker"
        if args.queues is not None:
            env["WORKER_QUEUES"] = args.queues
        if args.concurrency is not None:
            env["WORKER_CONCURRENCY"] = str(args.concurrency)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", module], env)
    return OK  # not reached


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; its exit code (see the module's docstring)."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
    except BrokenPipeError:
        # As the Python docs advise (signal module, "Note on SIGPIPE"): point stdout at
        # devnull so the interpreter's own flush at exit does not fail again and print.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    if args.handler is None:
        return _start(args)
    try:
        with Client(args.url, api_key=args.api_key) as client:
            code: int = args.handler(client, args)
            return code
    except commands.Usage as exc:
        parser.error(str(exc))  # exits 2
    except WaitTimeout as exc:
        output.error(exc, args.json)
        return TIMED_OUT
    except NotFound as exc:
        output.error(exc, args.json)
        return NOT_FOUND
    except ValidationFailed as exc:
        output.error(exc, args.json)
        return USAGE
    except Unavailable as exc:
        output.error(exc, args.json)
        return UNAVAILABLE
    except ApiError as exc:
        output.error(exc, args.json)
        return FAILED
    except KeyboardInterrupt:
        return 130
