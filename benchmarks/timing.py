"""Side-by-side timing shared by the benchmark scripts.

The machines are shared and noisy, so implementations are compared in ONE run: each is
called once first (compilation, lazy set-up; that time is reported apart), then the timed
calls rotate through the implementations so a slow phase of the machine hits all of them.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, NamedTuple


class Timing(NamedTuple):
    first_call_s: float  # the first call: compilation and set-up
    seconds: float  # median of the timed calls
    result: Any  # what the last timed call returned (e.g. an evaluation count)


def side_by_side(impls: dict[str, Callable[[], Any]], repeats: int,
                 warmup: dict[str, Callable[[], Any]] | None = None) -> dict[str, Timing]:
    """Times every zero-argument callable in ``impls``, interleaved, ``repeats`` times.

    Each is first called once untimed-for-throughput (``warmup[name]`` instead when given,
    e.g. a one-victim call of a slow sequential reference); round ``r`` then starts at
    implementation ``r mod len(impls)``, so no implementation is always first or last.
    Returns, per name, the first call's time, the median of the timed calls and the last
    timed call's return value.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    warmup = warmup or {}
    first = {}
    for name, fn in impls.items():
        t0 = time.perf_counter()
        warmup.get(name, fn)()
        first[name] = time.perf_counter() - t0
    names = list(impls)
    times: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, Any] = {}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            results[name] = impls[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: Timing(first[name], statistics.median(times[name]), results[name])
            for name in names}
