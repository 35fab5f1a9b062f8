"""What a single-slot worker's script costs Redis by itself: complete_claim's body run M
times inside one FCALL, on real records, so no network, client or other process is timed.

    python -m benchmarks.harness.script_cost [--iterations 3000] [--reps 5]

Each iteration reports the task the previous one claimed and claims the next, exactly as
complete_claim.lua does for a worker with one slot (the body is that file's text). Caches
stay warm, so the figure is a floor: the same call from a client costs more (`drain_cost`).
It tells script changes apart to a few percent where a drain's own swing is larger.
"""

from __future__ import annotations

import argparse
import asyncio
from importlib import resources

import benchmarks.systems.ours  # noqa: F401 (registers bench.noop, the type preloaded)
from benchmarks.harness.redisd import fresh_redis
from shared.producer import Producer
from shared.redis import _FUNCTION_ENTRY, _lib_source
from shared.settings import Settings

LANE, OWNER, TASK_TYPE = "work", "script-cost", "bench.noop"

# KEYS and ARGV as shared/transitions.py builds them for one slot (see complete_claim.lua's
# header); the body's KEYS and ARGV are these tables.
_LOOP = """
local P = 'tq:{default}:'
local K = {P .. 'counts', P .. 'leases', P .. 'held:%(owner)s', P .. 'wake:%(lane)s:idle',
  P .. 'wake:%(lane)s:offers', P .. 'wake:inbox:%(owner)s', P .. 'ready:%(lane)s:5',
  P .. 'ready:%(lane)s:4', P .. 'ready:%(lane)s:3', P .. 'ready:%(lane)s:2',
  P .. 'ready:%(lane)s:1', P .. 'ready:skip', P .. 'config', P .. 'parked', P .. 'expiry',
  P .. 'outbox', P .. 'tp:0'}
local id, token = nil, nil
local t0 = redis.call('TIME')
for _ = 1, tonumber(ARGV[1]) do
  script_clock, token_suffix = nil, nil
  local A = {'30000', '1', 'bench', '%(owner)s', '', '', '%(lane)s', '%(type)s', ARGV[2],
    ARGV[3]}
  if id then A[11], A[12], A[13] = id, token, 'null' end
  local reply = (function(KEYS, ARGV)
%(body)s
  end)(K, A)
  id, token = nil, nil
  local record = reply[2][5] or {}
  for j = 1, #record, 2 do
    if record[j] == 'id' then id = record[j + 1] end
    if record[j] == 'token' then token = record[j + 1] end
  end
end
local t1 = redis.call('TIME')
return (tonumber(t1[1]) - tonumber(t0[1])) * 1000000 + tonumber(t1[2]) - tonumber(t0[2])
"""


async def _preload(url: str, n: int) -> None:
    producer = await Producer.from_settings(Settings(redis_url=url)).start()
    try:
        for _ in range(0, n, 1000):
            await producer.enqueue_many([{"type": TASK_TYPE, "payload": 1.0}] * 1000)
    finally:
        await producer.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=3000, help="per FCALL")
    parser.add_argument("--reps", type=int, default=5)
    ns = parser.parse_args()
    body = (resources.files("shared") / "scripts" / "complete_claim.lua").read_text()
    loop = _LOOP % {"owner": OWNER, "lane": LANE, "type": TASK_TYPE, "body": body}
    library = "\n".join(
        [
            "#!lua name=script_cost",
            _lib_source("classic"),
            _FUNCTION_ENTRY,
            f"redis.register_function('script_cost', entry(function(KEYS, ARGV)\n{loop}\nend))",
        ]
    )
    with fresh_redis() as server:
        asyncio.run(_preload(server.url, ns.iterations * ns.reps + 1000))
        server.client.function_load(library, replace=True)
        now_ms = int(server.client.time()[0]) * 1000
        per_iteration = [
            server.client.fcall("script_cost", 1, "tq:{default}:counts", ns.iterations,
                                now_ms, now_ms + 3_600_000) / ns.iterations
            for _ in range(ns.reps)
        ]  # fmt: skip
        completed = int(server.client.hget("tq:{default}:counts", "completed") or 0)
    if completed < ns.iterations * ns.reps - ns.reps:
        raise SystemExit(f"only {completed} tasks completed: the loop did not claim as a worker")
    print(
        "complete_claim, one task reported and one claimed per iteration: "
        + " ".join(f"{us:.1f}" for us in per_iteration)
        + f" us (min {min(per_iteration):.1f})"
    )


if __name__ == "__main__":
    main()
