"""Shared load driver for the benchmarks: N client threads for a fixed time, a weighted mix
of operations, throughput and latency percentiles. Imports the test fixtures to start
servers (`tests/fixtures`), so run benchmarks from the repository root."""

from __future__ import annotations

import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

Op = Callable[[requests.Session], requests.Response]


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def to_dict(self) -> dict:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.pct(0.50) * 1000, 1),
            "p99_ms": round(self.pct(0.99) * 1000, 1),
            "errors": self.errors,
            "requests": self.requests,
        }


def run_load(make_session: Callable[[], requests.Session], mix: list[tuple[float, Op]],
             threads: int, seconds: float, warmup: float = 2.0) -> LoadResult:
    """Run the mix from ``threads`` threads; only requests after ``warmup`` count."""
    weights = [w for w, _ in mix]
    ops = [op for _, op in mix]
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"n": 0, "err": 0}
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        session = make_session()
        mine: list[float] = []
        errs = 0
        while True:
            now = time.monotonic()
            if now >= stop_at:
                break
            op = rng.choices(ops, weights)[0]
            t0 = time.monotonic()
            try:
                ok = op(session).status_code < 400
            except requests.RequestException:
                ok = False
            t1 = time.monotonic()
            if t0 >= measure_from:
                mine.append(t1 - t0)
                errs += not ok
        with lock:
            latencies.extend(mine)
            counts["n"] += len(mine)
            counts["err"] += errs

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + warmup + 120)
    return LoadResult(counts["n"], counts["err"], seconds, latencies)


def median(values: list[float]) -> float:
    return statistics.median(values)
