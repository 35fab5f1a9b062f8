"""The arithmetic of the Redis Cluster benchmark rows (benchmarks/harness/topology.py) and how
run.py pools the failover samples, without any Redis."""

from __future__ import annotations

import pytest

from benchmarks.harness import report, stats, topology
from benchmarks.harness.topology import Probe
from benchmarks.run import derived_samples


def test_cpu_per_task_is_the_cpu_difference_in_microseconds_per_task() -> None:
    assert topology.cpu_us_per_task(10.0, 10.5, 10_000) == pytest.approx(50.0)
    assert topology.cpu_us_per_task(1.0, 1.0, 5) == 0.0
    assert topology.cpu_us_per_task(1.0, 2.0, 0) is None


def test_per_shard_cpu_divides_each_shard_by_its_own_queues_tasks() -> None:
    before = {"a:1": 1.0, "b:2": 2.0, "c:3": 3.0}
    after = {"a:1": 1.3, "b:2": 2.2, "c:3": 3.1}
    tasks = {"a:1": 3_000, "b:2": 4_000}
    assert topology.per_shard_us(before, after, tasks) == {
        "a:1": pytest.approx(100.0),
        "b:2": pytest.approx(50.0),
        "c:3": None,  # held no queue of the drain
    }


def test_ceiling_is_shards_times_what_the_busiest_shards_cpu_pays_for() -> None:
    assert topology.ceiling_per_second([50.0]) == pytest.approx(20_000)
    # Three shards at 40, 50 and 40 us: the one at 50 saturates first, at 20,000/s of its
    # third of the load, so the cluster at 60,000/s.
    assert topology.ceiling_per_second([40.0, 50.0, 40.0]) == pytest.approx(60_000)
    assert topology.ceiling_per_second([]) is None
    assert topology.ceiling_per_second([40.0, None]) is None
    assert topology.ceiling_per_second([40.0, 0.0]) is None


def test_recovered_at_counts_only_completions_on_the_new_primary() -> None:
    probes = [
        Probe(0.00, False, 10),
        Probe(0.01, False, 12),  # the old primary's last completions, still replicated
        Probe(0.05, True, 12),  # promoted: the count to beat
        Probe(0.10, True, 12),
        Probe(0.20, True, 13),
        Probe(0.30, True, 15),
    ]
    assert topology.recovered_at(probes) == 0.20


def test_recovered_at_is_none_until_a_completion_after_the_promotion() -> None:
    assert topology.recovered_at([]) is None
    assert topology.recovered_at([Probe(0.0, False, 1), Probe(0.1, False, 9)]) is None
    assert topology.recovered_at([Probe(0.0, True, 5), Probe(0.1, True, 5)]) is None
    # A count lower than the old primary's (writes lost with it) is the base all the same.
    assert topology.recovered_at([Probe(0, False, 9), Probe(1, True, 7), Probe(2, True, 8)]) == 2


def test_recovery_from_stamps_is_the_end_of_the_silence_around_the_fault() -> None:
    fault = 100.0
    completions = [99.90, 99.95, 99.99, 100.80, 100.81, 100.85]
    assert topology.recovery_seconds(fault, completions) == pytest.approx(0.80)


def test_recovery_from_stamps_ignores_a_completion_of_the_old_primarys_last_moments() -> None:
    fault = 100.0
    # 100.02: stamped after the fault, but before the pause reached the old primary.
    completions = [99.95, 99.99, 100.02, 100.50, 100.51]
    assert topology.recovery_seconds(fault, completions) == pytest.approx(0.50)


def test_recovery_from_stamps_without_a_silence_or_a_completion() -> None:
    fault = 100.0
    steady = [99.97, 99.99, 100.01, 100.03, 100.05, 100.07, 100.09, 100.11]
    # No stall: the longest gap starting within the grace ends by then, a few ms late.
    assert topology.recovery_seconds(fault, steady) == pytest.approx(0.01, abs=0.07)
    assert topology.recovery_seconds(fault, [99.0, 99.5]) is None
    assert topology.recovery_seconds(fault, [101.5]) == pytest.approx(1.5)


def test_refusals_counts_one_window_by_queue_and_status() -> None:
    records = [
        [9.9, 0, 201, 0.001],  # before the window
        [10.0, 0, 503, 0.002],
        [10.1, 1, 201, 0.001],
        [10.2, 0, 503, 0.002],
        [10.3, 0, 0, 10.0],  # no answer
        [10.4, 2, 503, 0.002],  # another queue refused: a shard down stopped more than its own
        [10.5, 0, 201, 0.001],
        [11.0, 0, 503, 0.002],  # at the end: outside
    ]
    got = topology.refusals(records, 10.0, 11.0, queue=0)
    assert got == topology.Refusals(refused=2, failed=1, accepted=1, others_refused=1)


def test_failover_samples_are_pooled_over_repetitions_into_p50_and_p99() -> None:
    recoveries = [0.08, 0.12, 0.09, 0.30, 0.11, 0.10]
    samples = [
        {"system": "ours", "rep": 1 + i // 2, "metric": "failover_manual", "config": "",
         "value": value, "unit": "s", "note": ""}
        for i, value in enumerate(recoveries)
    ] + [
        {"system": "ours", "rep": 1, "metric": "failover_kill", "config": "", "value": 2.6,
         "unit": "s", "note": ""},
    ]  # fmt: skip
    derived = {s["metric"]: s for s in derived_samples(samples)}
    assert derived["failover_manual_p50"]["value"] == stats.percentile(recoveries, 50) == 0.10
    assert derived["failover_manual_p99"]["value"] == 0.30  # nearest rank: the largest of six
    assert derived["failover_manual_p50"]["config"] == "6 faults over 3 repetitions"
    assert derived["failover_kill_p50"]["value"] == derived["failover_kill_p99"]["value"] == 2.6
    rows = {r["metric"]: r for r in report.aggregate(samples + list(derived.values()))}
    assert rows["failover_manual_p99"]["median"] == 0.30
    assert rows["failover_manual"]["n"] == 6  # every fault, in the spread table


def test_every_new_row_is_in_the_report_and_has_no_target_to_miss() -> None:
    keys = {m.key for m in report.METRICS}
    new = {
        "shards_drain_one", "shards_drain_cluster", "shards_drain_ratio", "shards_drain_sharded",
        "shards_cpu_one", "shards_cpu_shard", "shards_cpu_sum", "shards_cpu_sharded",
        "failover_manual_p50", "failover_manual_p99",
        "failover_kill_p50", "failover_kill_p99", "failover_refused_manual",
        "failover_refused_kill",
    }  # fmt: skip
    assert new <= keys
    by = {("ours", k): {"median": 1.0} for k in new}
    assert all(report._target_met(k, 1.0, None, by) is None for k in new)
