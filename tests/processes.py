"""Finding and waiting on the processes a test started: vLLM's engine processes under a server or
a Ray actor, and figures from a server's /metrics."""

import re
import time
from collections.abc import Callable

import httpx
import psutil


def engine_processes(root_pid: int) -> list[psutil.Process]:
    """vLLM's processes below `root_pid` (engine core first, then its workers)."""
    found = [
        process
        for process in psutil.Process(root_pid).children(recursive=True)
        if title(process).startswith("VLLM::")
    ]
    return sorted(found, key=lambda process: title(process) != "VLLM::EngineCore")


def title(process: psutil.Process) -> str:
    """The title a process gave itself (vLLM's `VLLM::EngineCore`; `name()` is cut at 15 characters)."""
    try:
        return (process.cmdline() or [process.name()])[0]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 300.0) -> None:
    """Poll `condition`; the timeout is a hang guard (minutes), never the thing tested."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(0.05)


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def still_running(processes: list[psutil.Process], timeout_s: float = 120.0) -> list[psutil.Process]:
    """The processes that have not ended within `timeout_s` (a process killed last, or Ray's after
    its driver, may take a moment to go; the timeout is a hang guard, not the thing tested)."""
    deadline = time.monotonic() + timeout_s
    while any(alive(process) for process in processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [process for process in processes if alive(process)]
