"""Timing shared by the benchmark scripts (the method of ../shared/bench-reference/_common.py):
warm-up calls (JIT compilation happens there), then ``samples`` samples, each running
``fn`` back to back for at least ``min_time`` seconds; returns (median, min, max) seconds
per call.  ``mean_time`` times a fixed number of calls, for benchmarks that alternate
several functions round by round."""
import statistics
import time


def time_per_call(fn, min_time=0.02, samples=9, warmup=3):
    for _ in range(warmup):
        fn()
    per = []
    for _ in range(samples):
        k, t0 = 0, time.perf_counter()
        while True:
            fn()
            k += 1
            dt = time.perf_counter() - t0
            if dt >= min_time:
                break
        per.append(dt / k)
    return statistics.median(per), min(per), max(per)


def mean_time(fn, reps):
    """Seconds per call of ``fn``: one warm-up call, then the mean of ``reps`` calls."""
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps
