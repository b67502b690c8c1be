"""CPU seconds spent by the benchmark's processes, by role, between two samples.

Wall time says how long a step took; CPU time says how much of the machine it used. On a machine
of `os.cpu_count()` cores a step whose processes together use C core-seconds cannot take less than
C / cores seconds, however its parts overlap: overlapping can only fill idle cores. Roles:

- trainer: this process (all its threads: the PEFT trainer, the Ray driver, the HTTP client);
- engine: the rollout replica's actor process (our HTTP server, vLLM's AsyncLLM) and its
  descendants (vLLM's engine core, where the model runs);
- other: every other descendant of this process (Ray's GCS and raylet, the reward router and
  worker actors, idle Ray workers).

CPU time counts what a thread holds a core for, busy-waiting included (OpenMP threads spin a while
before they sleep), so it measures the processes as configured, not the least work they could do.
"""

from dataclasses import dataclass, field

import psutil

ROLES = ("trainer", "engine", "other")


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


@dataclass
class ProcessCpu:
    """Samples the CPU seconds of each role; `take()` returns those used since the last `take()`."""

    engine_pid: int
    _last: dict[tuple[int, float], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.take()

    def _by_role(self) -> dict[str, dict[tuple[int, float], float]]:
        me = psutil.Process()
        engine = psutil.Process(self.engine_pid)
        engine_pids = {engine.pid, *(child.pid for child in engine.children(recursive=True))}
        roles: dict[str, dict[tuple[int, float], float]] = {role: {} for role in ROLES}
        for process in [me, *me.children(recursive=True)]:
            try:
                key = (process.pid, process.create_time())
                cpu = _cpu_s(process)
            except psutil.NoSuchProcess:  # ended between the listing and the reading
                continue
            role = "trainer" if process.pid == me.pid else "engine" if process.pid in engine_pids else "other"
            roles[role][key] = cpu
        return roles

    def take(self) -> dict[str, float]:
        """CPU seconds per role since the last take, over the processes alive at both."""
        roles = self._by_role()
        used = {
            role: sum(cpu - self._last[key] for key, cpu in processes.items() if key in self._last)
            for role, processes in roles.items()
        }
        self._last = {key: cpu for processes in roles.values() for key, cpu in processes.items()}
        return used
