"""Timing wrappers for the benchmarks: wall-clock and this process's CPU time (all its threads).

On a shared, oversubscribed machine the wall clock of a phase swings with other people's load;
the CPU time a phase spends in this process is the steadier measure of the work it does."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PhaseClock:
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    def wrap(self, method: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.wall_s.append(time.perf_counter() - wall)
                self.cpu_s.append(time.process_time() - cpu)

        return timed

    def drain(self) -> tuple[float, float]:
        """(wall, cpu) summed since the last drain."""
        totals = sum(self.wall_s), sum(self.cpu_s)
        self.wall_s.clear()
        self.cpu_s.clear()
        return totals
