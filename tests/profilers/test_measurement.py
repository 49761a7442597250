import numpy as np
import pytest

from edgekd.profilers.base import time_runs
from edgekd.profilers.measurement import latency_stats


def test_stats_on_known_samples():
    s = latency_stats(list(range(1, 101)), warmup=3)  # 1..100 ms
    assert s.n == 100 and s.warmup == 3
    assert s.mean == pytest.approx(50.5)
    assert s.p50 == pytest.approx(50.5)
    assert s.p90 == pytest.approx(90.1)
    assert s.p99 == pytest.approx(99.01)
    assert s.min == 1 and s.max == 100
    assert s.std == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert s.cv == pytest.approx(s.std / s.mean)
    assert s.total_s == pytest.approx(5.050)


def test_stats_refuse_empty():
    with pytest.raises(ValueError):
        latency_stats([], warmup=0)


def test_stopping_rule_minimum_count_and_warmup_order():
    calls = []
    started = []
    samples = time_runs(lambda: calls.append(1), warmup=4, min_runs=7, min_seconds=0.0,
                        on_start=lambda: started.append(len(calls)))
    assert len(samples) == 7 and len(calls) == 11
    assert started == [4]  # the timed window opens after the warm-up runs


def test_stopping_rule_minimum_duration_extends_the_count():
    import time

    samples = time_runs(lambda: time.sleep(0.002), warmup=0, min_runs=2, min_seconds=0.05)
    assert len(samples) > 2
    assert sum(samples) >= 50.0  # the timed total reached min_seconds
    assert sum(samples[:-1]) < 50.0  # and it stopped at the first run that reached it
