"""Recovery's memory of queues it could not reach: a queue that answers again is left alone
while its consumers renew the leases they could not renew while it was away."""

from __future__ import annotations

import pytest

from services.scheduler import recover
from services.scheduler.recover import QueueOutages
from shared.errors import RedisUnavailable


def test_a_queue_back_from_an_outage_settles_before_recovery_touches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(recover.time, "monotonic", lambda: now[0])
    outages = QueueOutages(settle_seconds=4.0)
    assert not outages.settling("media")
    outages.lost("media", RedisUnavailable("CLUSTERDOWN"))
    assert "media" in outages.away
    outages.back("media")
    assert "media" not in outages.away
    now[0] += 3.9
    assert outages.settling("media")  # its leases may look expired although alive
    now[0] += 0.2
    assert not outages.settling("media")
    assert not outages.settling("media")  # and stays usable
    assert not outages.settling("reports")  # never away: never held back
