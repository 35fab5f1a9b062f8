"""The Redis Cluster rows (issue 13, ours only): three queues drained from three primaries
against the same queues on one Redis, and how long a queue takes to complete tasks again
after a failover under a steady load of creates.

The clusters are the topology tests' (tests/support/redis_cluster.py `run_cluster`): primaries
on loopback formed with raw CLUSTER commands, every process killed on exit. Our services
get the cluster as REDIS_URL; the task bodies still push their start times to the run's own
Redis (`server`), so the orchestrator reads results the same way as in every other row and
the shards do only the queues' work.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis

from benchmarks.harness import stats, topology
from benchmarks.harness.procs import LOG_DIR, Group, Proc
from benchmarks.harness.redisd import RedisServer, free_port, fresh_redis, redis_binary
from benchmarks.harness.systems import OURS_PY, System
from benchmarks.harness.workloads import (
    Outcome,
    Sizes,
    _http_ok,
    config_label,
    drive_queues,
    group_cpu,
    read_results,
    results_len,
    start_system,
    wait_for,
)
from tests.support.redis_cluster import Cluster, Node, run_cluster

SHARDS = 3
PROBE_SECONDS = 0.005  # between two readings of the new primary during a failover
PROBE_TIMEOUT_SECONDS = 60.0
DRAIN_QUIET_SECONDS = 3.0  # after the load: no completion this long means none is coming
# Workers serve the three queues with equal weights: each claim round starts with a queue
# drawn at random, so all three shards have work at once (a strict order would drain one
# shard after the other).
EQUAL = ":1,".join(["{}"] * SHARDS) + ":1"
CLASSIC = {"EVENTS_MODE": "classic"}  # the default, whatever the caller's environment says


class Skipped(Exception):
    """The row cannot run here (no Redis 7 for a cluster); it reports nothing."""


def _require_cluster_binary() -> str:
    binary = redis_binary()
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    version = done.stdout.split("v=", 1)[-1].split()[0] if "v=" in done.stdout else "0"
    if int(version.split(".")[0] or 0) < 7:
        raise Skipped(f"Redis Cluster rows need Redis 7 or later, {binary} is {version}")
    return binary


def _counts_key(queue: str) -> str:
    return f"tq:{{{queue}}}:counts"


# -- three queues on three primaries against one Redis -------------------------------------


def drain_shards(system: System, server: RedisServer, sizes: Sizes, rep: int = 1) -> Outcome:
    """N tasks spread evenly over three queues, each on its own cluster primary, drained by
    the same workers as drain_high; the same queues on one Redis; and on the cluster again
    with EVENTS_MODE=sharded (the order rotates every repetition). Reports the drains, the
    ratio of the first two, and Redis CPU per task: the one Redis's over all tasks, and each
    primary's over the tasks of the queue it holds."""
    out = Outcome()
    binary = _require_cluster_binary()
    processes, concurrency = system.high
    label = config_label(processes, concurrency)
    with (
        run_cluster(binary, primaries=SHARDS, replicas_per_primary=0) as cluster,
        fresh_redis() as one,
    ):
        queues = cluster.queues_on_distinct_primaries(SHARDS)
        shards = {q: cluster.primary_for_key(_counts_key(q)) for q in queues}
        holds_global = cluster.primary_for_key("tq:{_global}:hb:worker").address
        one_address = f"127.0.0.1:{one.port}"
        on_shards = {n.address: n.client() for n in shards.values()}
        shard_of = {q: n.address for q, n in shards.items()}
        # (name, REDIS_URL, EVENTS_MODE, the servers by address, the server of each queue)
        engines: list[tuple[str, str, dict[str, str], dict[str, redis.Redis], dict[str, str]]] = [
            ("one", one.url, CLASSIC, {one_address: one.client}, {q: one_address for q in queues}),
            ("cluster", cluster.url, CLASSIC, on_shards, shard_of),
            ("sharded", cluster.url, {"EVENTS_MODE": "sharded"}, on_shards, shard_of),
        ]  # fmt: skip
        turn = (rep - 1) % len(engines)
        engines = engines[turn:] + engines[:turn]
        done: dict[str, dict[str, Any]] = {}
        for name, url, events, clients, where in engines:
            for client in clients.values():
                client.flushall()  # the cluster serves two of the drains
            done[name] = _drain_on(
                system, server, sizes, url, queues, clients, where, f"shards-{name}", events
            )
    single, spread, sharded = done["one"], done["cluster"], done["sharded"]
    out.add("shards_drain_one", f"3 queues on one Redis, {label}", single["rate"], "tasks/s",
            single["note"])  # fmt: skip
    out.add("shards_drain_cluster", f"3 queues on 3 primaries, {label}", spread["rate"],
            "tasks/s", spread["note"])  # fmt: skip
    if single["rate"] and spread["rate"]:
        out.add("shards_drain_ratio", "3 primaries / one Redis, same repetition",
                spread["rate"] / single["rate"], "x")  # fmt: skip
    out.add("shards_drain_sharded", f"3 primaries, EVENTS_MODE=sharded, {label}",
            sharded["rate"], "tasks/s", sharded["note"])  # fmt: skip
    one_us = next(iter(single["redis_us"].values()))
    out.add("shards_cpu_one", "one Redis: its CPU / every task", one_us, "us/task")
    for key, run, what in (
        ("shards_cpu_shard", spread, "busiest primary: its CPU / its queue's tasks"),
        ("shards_cpu_sharded", sharded, "the same, EVENTS_MODE=sharded"),
    ):
        costs = list(run["redis_us"].values())
        if costs and all(v is not None for v in costs):
            out.add(key, what, max(costs), "us/task")
    if spread["tasks"]:
        out.add("shards_cpu_sum", "3 primaries: their CPU / every task",
                spread["redis_cpu_s"] / spread["tasks"] * 1e6, "us/task")  # fmt: skip
    out.diagnostics.update(
        order=[name for name, *_ in engines],
        queues=shard_of,
        global_slot_on=holds_global,
        one=single,
        cluster=spread,
        sharded=sharded,
        ceiling_one_per_s=topology.ceiling_per_second([one_us]),
        ceiling_cluster_per_s=topology.ceiling_per_second(spread["redis_us"].values()),
        ceiling_sharded_per_s=topology.ceiling_per_second(sharded["redis_us"].values()),
    )
    return out


def _cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _drain_on(
    system: System, server: RedisServer, sizes: Sizes, engine_url: str, queues: list[str],
    clients: dict[str, redis.Redis], shard_of: dict[str, str], tag: str, env: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """One drain of the queues on one engine (a Redis, or a cluster's primaries, `clients`
    by address), `env` added to every process: preload in bulk, start the workers and the
    scheduler, time the drain, and read each server's CPU and commands before and after."""
    n = sizes.drain
    processes, concurrency = system.high
    server.flush()
    with Group(server.url, f"{system.name}-{tag}", engine_url=engine_url, env=env) as group:
        enq = drive_queues(
            system, group, "enqueue", "--n", str(n), "--queues", ",".join(queues), "--bulk",
            timeout=600,
        )  # fmt: skip
        per_queue = {str(q): int(v) for q, v in dict(enq["per_queue"]).items()}
        for client in clients.values():
            client.config_resetstat()
        cpu0 = {address: _cpu_seconds(client) for address, client in clients.items()}
        bus0 = {address: _bus_messages(client) for address, client in clients.items()}
        env = {"WORKER_QUEUES": EQUAL.format(*queues)}
        pids = start_system(group, system, processes, concurrency, sizes, env)
        worker0 = group_cpu(pids)
        note = ""
        try:
            wait_for(lambda: results_len(server) >= n, sizes.drain_budget, f"{tag} drain")
        except TimeoutError:
            note = f"stopped after {sizes.drain_budget:.0f} s, {results_len(server)} of {n} done"
        cpu1 = {address: _cpu_seconds(client) for address, client in clients.items()}
        worker_cpu = group_cpu(pids) - worker0
        bus1 = {address: _bus_messages(client) for address, client in clients.items()}
        commands = {address: client.info("commandstats") for address, client in clients.items()}
    starts = read_results(server)
    rate, window = stats.drain_rate(starts) if starts else (0.0, 0)
    tasks: dict[str, int] = {}
    for queue, count in per_queue.items():
        tasks[shard_of[queue]] = tasks.get(shard_of[queue], 0) + count
    redis_us = topology.per_shard_us(cpu0, cpu1, tasks)
    return {
        "rate": rate,
        "note": note,
        "window_tasks": window,
        "tasks": len(starts),
        "tasks_by_server": tasks,
        "redis_cpu_s": round(sum(cpu1[a] - cpu0[a] for a in cpu1), 4),
        "redis_us": {a: None if v is None else round(v, 2) for a, v in redis_us.items()},
        "worker_cpu_us_per_task": round(worker_cpu / max(len(starts), 1) * 1e6, 1),
        # Per task of the server's own queues: its costliest commands (calls inside scripts
        # included) and, on a cluster, the messages its cluster bus received (every node
        # receives every other node's PUBLISH).
        "commands": {a: _top(commands[a], tasks.get(a, 0)) for a in commands},
        "bus_received_per_task": {
            a: {
                kind: round(
                    (bus1[a].get(kind, 0) - bus0[a].get(kind, 0)) / max(tasks.get(a, 0), 1), 2
                )
                for kind in bus1[a]
            }
            for a in bus1
        },
    }


def _top(commandstats: dict[str, Any], tasks: int) -> dict[str, dict[str, float]]:
    """The five costliest commands in INFO commandstats, per task."""
    n = max(tasks, 1)
    rows = {
        name.removeprefix("cmdstat_"): {
            "calls_per_task": round(int(s["calls"]) / n, 3),
            "usec_per_task": round(int(s["usec"]) / n, 2),
        }
        for name, s in commandstats.items()
    }
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["usec_per_task"])[:5])


def _bus_messages(client: redis.Redis) -> dict[str, int]:
    """Cluster-bus messages received so far, by type (empty outside a cluster)."""
    try:
        text = str(client.execute_command("CLUSTER", "INFO"))  # type: ignore[no-untyped-call]
    except redis.ResponseError:
        return {}
    prefix = "cluster_stats_messages_"
    return {
        key.removeprefix(prefix).removesuffix("_received"): int(value)
        for key, _, value in (line.strip().partition(":") for line in text.splitlines())
        if key.startswith(prefix) and key.endswith("_received") and key != prefix + "received"
    }


# -- failover under a steady load ----------------------------------------------------------


def failover(system: System, server: RedisServer, sizes: Sizes, rep: int = 1) -> Outcome:
    """A cluster of 3 primaries with a replica each; api, scheduler and 2 workers x 16 on it;
    creates at a steady rate through the API, in turn to three queues on three primaries.
    Then, `failover_trials` times, alternately a manual failover (`CLUSTER FAILOVER` on a
    replica) and a SIGKILL of a primary (restarted afterwards, it rejoins as a replica), each
    on the next queue's primary. Per fault: seconds until that queue completes a task again,
    probed on its new primary (`_fault`), and the creates for it refused (503) meanwhile;
    samples are per fault, pooled over the repetitions by run.py. The diagnostics add the
    same recovery judged from the task records' `completed` stamps, as a cross-check."""
    out = Outcome()
    binary = _require_cluster_binary()
    processes, concurrency = 2, 16
    server.flush()
    load_file = LOG_DIR / f"{system.name}-failover-load.json"
    trials: list[dict[str, Any]] = []
    with run_cluster(binary, primaries=SHARDS, replicas_per_primary=1) as cluster:
        queues = cluster.queues_on_distinct_primaries(SHARDS)
        with (
            Group(server.url, f"{system.name}-failover", cluster.url, CLASSIC) as group,
            _steady_load(system, group, sizes, queues, load_file) as load,
        ):
            start_system(group, system, processes, concurrency, sizes,
                         {"WORKER_QUEUES": EQUAL.format(*queues)})  # fmt: skip
            load.start()
            wait_for(lambda: results_len(server) >= sizes.failover_rate * sizes.failover_warmup,
                     60, "creates running through the cluster")  # fmt: skip
            for k in range(sizes.failover_trials):
                kind = ("manual", "kill")[k % 2]
                index = (k + rep - 1) % SHARDS
                trials.append(_fault(cluster, queues[index], index, kind))
                time.sleep(sizes.failover_quiet)
            records = load.stop()
            accepted = sum(1 for r in records if int(r[2]) == 201)
            completed = _wait_completed(cluster, queues, accepted)
        done = {q: _completed_records(cluster, q) for q in queues}
        counts = {
            q: cluster.primary_for_key(_counts_key(q)).client().hgetall(_counts_key(q))
            for q in queues
        }
        stuck = {q: _still_processing(cluster, q) for q in queues}
    completions = {q: times for q, (times, _) in done.items()}
    rate = f"{sizes.failover_rate:g} creates/s over 3 queues"
    # A no-op task never fails by itself: one that did lost its outcome to a fault.
    failed_tasks = sum(int(c.get("failed", 0)) for c in counts.values())
    for i, trial in enumerate(trials):
        next_at = trials[i + 1]["at"] if i + 1 < len(trials) else float("inf")
        times = completions[queues[trial["queue"]]]
        stamped = topology.recovery_seconds(trial["at"], times)
        trial["recovered_by_stamps_s"] = None if stamped is None else round(stamped, 4)
        # For the reader: the queue's completion stamps around the fault (ms from it).
        trial["completions_ms"] = [
            round((t - trial["at"]) * 1000, 1) for t in times if -0.1 <= t - trial["at"] <= 5
        ][:12]
        recovered = trial["recovered_s"]
        until = trial["at"] + (recovered if recovered is not None else 0.0)
        window = topology.refusals(records, trial["at"], until, trial["queue"])
        after = topology.refusals(records, until, next_at, trial["queue"])
        trial.update(refused=window.refused, failed=window.failed, accepted=window.accepted,
                     others_refused=window.others_refused, refused_after=after.refused,
                     failed_after=after.failed)  # fmt: skip
        notes = []
        if window.failed or window.others_refused or after.refused or after.failed:
            notes.append("creates failing beyond the faulted queue's outage")
        if failed_tasks:
            notes.append(f"{failed_tasks} no-op task(s) of that repetition ended failed")
        note = "; ".join(notes) + (": see the diagnostics" if notes else "")
        if recovered is not None:
            out.add(f"failover_{trial['kind']}", rate, recovered, "s", note)
        out.add(f"failover_refused_{trial['kind']}", rate, float(window.refused), "creates", note)
    statuses: dict[str, int] = {}
    for record in records:
        statuses[str(int(record[2]))] = statuses.get(str(int(record[2])), 0) + 1
    out.diagnostics.update(
        config=f"{config_label(processes, concurrency)}, api, scheduler",
        queues=queues,
        trials=trials,
        statuses=statuses,
        creates=len(records),
        # With REDIS_WAIT_REPLICAS=0 a create acknowledged just before a primary's SIGKILL
        # may not have reached its replica: accepted, and no record of it (lost); a task
        # whose claim the old primary took with it waits for its lease (in flight).
        accepted_not_completed=accepted - completed,
        failed_tasks=failed_tasks,
        accepted_lost=accepted - sum(int(c.get("total", 0)) for c in counts.values()),
        counts=counts,
        still_processing=stuck,
        completed={q: len(times) for q, (times, _) in done.items()},
        ran_more_than_once={q: again for q, (_, again) in done.items()},
    )
    return out


def _fault(cluster: Cluster, queue: str, index: int, kind: str) -> dict[str, Any]:
    """Fail over the primary of `queue`; probe its replica until, as the new primary, it has
    completed a task of the queue (`topology.recovered_at`); then restore the cluster's
    health (a killed node is restarted and rejoins as a replica)."""
    primary = cluster.primary_for_key(_counts_key(queue))
    replica = cluster.replica_of(primary)
    holds_global = cluster.primary_for_key("tq:{_global}:hb:worker") is primary
    at = time.time()
    if kind == "manual":
        replica.command("CLUSTER", "FAILOVER")
    else:
        cluster.kill(primary)
    probes = _probe_until_recovered(replica, queue, at + PROBE_TIMEOUT_SECONDS)
    recovered = topology.recovered_at(probes)
    promoted = next((p.at for p in probes if p.primary), None)
    if kind == "kill":
        cluster.restart(primary, timeout=30)
    else:
        cluster.wait_ok(30)
    return {
        "kind": kind, "queue": index, "at": at, "shard_holds_global": holds_global,
        "new_primary": replica.address,
        "promoted_s": None if promoted is None else round(promoted - at, 4),
        "recovered_s": None if recovered is None else round(recovered - at, 4),
        "probes": len(probes),
    }  # fmt: skip


def _probe_until_recovered(node: Node, queue: str, deadline: float) -> list[topology.Probe]:
    """Read the node's role and the queue's `completed` count every PROBE_SECONDS until it
    has completed a task as a primary (or the deadline passes); the probes, in order."""
    probes: list[topology.Probe] = []
    client = node.client()
    while time.time() < deadline:
        sent = time.time()
        try:
            pipe = client.pipeline(transaction=True)
            pipe.execute_command("ROLE")  # type: ignore[no-untyped-call]
            pipe.hget(_counts_key(queue), "completed")
            role, completed = pipe.execute()
        except redis.RedisError:
            time.sleep(PROBE_SECONDS)
            continue
        probes.append(topology.Probe(sent, role[0] == "master", int(completed or 0)))
        if topology.recovered_at(probes) is not None:
            return probes
        time.sleep(PROBE_SECONDS)
    raise TimeoutError(f"queue {queue} did not complete a task on {node.address} in time")


def _wait_completed(cluster: Cluster, queues: list[str], accepted: int) -> int:
    """Wait until the queues have completed `accepted` tasks, or made no progress for
    DRAIN_QUIET_SECONDS; their completed count then."""
    last, changed = -1, time.monotonic()
    while time.monotonic() - changed < DRAIN_QUIET_SECONDS:
        count = sum(
            int(cluster.primary_for_key(_counts_key(q)).command("HGET", _counts_key(q),
                                                                 "completed") or 0)
            for q in queues
        )  # fmt: skip
        if count >= accepted:
            return count
        if count != last:
            last, changed = count, time.monotonic()
        time.sleep(0.1)
    return last


def _still_processing(cluster: Cluster, queue: str, limit: int = 5) -> list[dict[str, Any]]:
    """Up to `limit` tasks of the queue still processing, with the last events of each."""
    client = cluster.primary_for_key(_counts_key(queue)).client()
    out = []
    for task_id in map(str, client.zrange(f"tq:{{{queue}}}:index:processing", 0, limit - 1)):
        record = client.hmget(f"tq:{{{queue}}}:task:{task_id}", ["attempt", "worker", "owner"])
        events = client.lrange(f"tq:{{{queue}}}:task:{task_id}:events", -3, -1)
        out.append({"id": task_id, "record": record, "events": events})
    return out


def _completed_records(cluster: Cluster, queue: str) -> tuple[list[float], int]:
    """From the queue's primary: the `completed` time (s) of every completed task, sorted,
    and how many of them ran more than once (`attempt` > 1: a lease taken back meanwhile)."""
    client = cluster.primary_for_key(_counts_key(queue)).client()
    ids = client.zrange(f"tq:{{{queue}}}:index:completed", 0, -1)
    pipe = client.pipeline(transaction=False)
    for task_id in map(str, ids):
        pipe.hmget(f"tq:{{{queue}}}:task:{task_id}", ["completed", "attempt"])
    rows = [row for row in pipe.execute() if row[0]]
    times = sorted(int(float(completed)) / 1000 for completed, _ in rows)
    return times, sum(1 for _, attempt in rows if int(attempt or 1) > 1)


class _Load:
    """The steady-load process (benchmarks/harness/steady.py), started and stopped here."""

    def __init__(self, group: Group, proc: Proc, out: Path, timeout: float) -> None:
        self.group, self.proc, self.out, self.timeout = group, proc, out, timeout
        self.child: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.out.unlink(missing_ok=True)
        self.child = self.group.start(self.proc)

    def stop(self) -> list[list[float]]:
        """SIGTERM, wait for the answers still due, and read every request's record."""
        if self.child is None:
            return []
        self.child.send_signal(signal.SIGTERM)
        self.child.wait(self.timeout + 10)
        self.child = None
        records: list[list[float]] = json.loads(self.out.read_text())["records"]
        return records


@contextmanager
def _steady_load(
    system: System, group: Group, sizes: Sizes, queues: list[str], out: Path
) -> Iterator[_Load]:
    """The API on a free port (up before this yields) and the load process to start."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = Proc(
        "api",
        [str(system.python), "-m", "services.api"],
        {"API_PORT": str(port), "BIND_HOST": "127.0.0.1",
         "TASK_MODULES": "benchmarks.systems.ours"},
        system.root,
    )  # fmt: skip
    group.start(replace(api, env={**api.env, **dict(sizes.ours_env)}))
    wait_for(lambda: _http_ok(f"{base}/api/health"), 60, "api up", poll=0.1)
    argv = [
        str(OURS_PY), "-m", "benchmarks.harness.steady", "--url", f"{base}/api/tasks",
        "--rate", str(sizes.failover_rate), "--queues", ",".join(queues), "--out", str(out),
    ]  # fmt: skip
    load = _Load(group, Proc("steady", argv), out, timeout=10.0)
    try:
        yield load
    finally:
        if load.child is not None:
            load.child.kill()
