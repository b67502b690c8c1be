"""Stopping a run on Ctrl-C (SIGINT) or SIGTERM: every process it started goes, its checkpoints
stay resumable, and it says where it stopped and how to go on.

The first signal raises `RunStopped` in the driver's main thread (from inside `ray.get` as well);
the `with Placement` block then stops the actors it placed (vLLM engines first, gracefully) and
leaves Ray, and a private cluster (`--address local`) goes with it. Signals that arrive while that
runs are noted, not obeyed: a cleanup cut half-way is what leaves processes behind. A SIGINT the
process inherited as ignored (a background job of a non-interactive shell) stays ignored, as it
would for any program; SIGTERM still stops the run."""

import contextlib
import json
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("cxr_rl.driver")


class RunStopped(KeyboardInterrupt):
    """The run was asked to stop by a signal (a KeyboardInterrupt, so that nothing swallows it).
    Ray re-raises it from inside `ray.get` as a plain KeyboardInterrupt: `StopSignals.received`
    says which signal it was."""

    def __init__(self, signal_number: int):
        super().__init__(signal.Signals(signal_number).name)


class StopSignals:
    """Within `with StopSignals() as stop:`, SIGTERM and SIGINT raise `RunStopped` once; later ones
    are ignored. `stop.received` is the first signal's number."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received else "nothing"

    @property
    def exit_status(self) -> int:
        return 128 + (self.received or 0)  # what a shell reports for a process ended by the signal

    def _handler(self, signal_number: int, frame: Any) -> None:
        if self.received is not None:
            print(
                f"{signal.Signals(signal_number).name}: already stopping the run's processes; a moment...",
                file=sys.stderr,
            )
            return
        self.received = signal_number
        raise RunStopped(signal_number)

    def __enter__(self) -> "StopSignals":
        watched = [signal.SIGTERM]
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            watched.append(signal.SIGINT)
        self._previous = {number: signal.signal(number, self._handler) for number in watched}
        return self

    def __exit__(self, *exc: object) -> None:
        for number, old in self._previous.items():
            signal.signal(number, old)


@contextlib.contextmanager
def keep_sigterm_handler() -> Iterator[None]:
    """Around `ray.init()`, which installs a SIGTERM handler that exits at once (for a cluster it
    starts, after killing its processes), skipping the graceful stop of the run's actors."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


def where_it_stopped(run_dir: Path) -> str:
    """The phase and step the run folder shows (the driver and trainer log every step there)."""
    grpo = [entry for entry in _jsonl(run_dir / "metrics.jsonl") if entry.get("phase") == "grpo"]
    if grpo:
        latest = run_dir / "grpo" / "checkpoints" / "latest"
        saved = latest.read_text().strip() if latest.is_file() else "none yet"
        total = _grpo_max_steps(run_dir)
        return f"at GRPO step {grpo[-1]['step']}{f' of {total}' if total else ''} (last checkpoint: {saved})"
    sft = _jsonl(run_dir / "sft" / "metrics.jsonl")
    steps = [entry for entry in sft if entry.get("kind") == "step"]
    if (run_dir / "sft" / "sft_summary.json").is_file():
        return "after SFT, before the first GRPO step"
    if steps:
        epochs = [entry["epoch"] for entry in sft if entry.get("kind") == "epoch"]
        saved = f"from epoch {max(epochs)}" if epochs else "from its start (no epoch finished)"
        return f"in SFT at step {steps[-1]['step']}, epoch {steps[-1]['epoch']} (SFT resumes {saved})"
    return "during start-up, before any training step"


def resume_command(args: Any, run_dir: Path) -> str:
    """The `cxr-rl train` command that continues this run from its checkpoints."""
    command = ["cxr-rl", "train"]
    if args.config:
        command += ["--config", args.config]
    command += ["--run-dir", str(run_dir)]
    if args.address != "auto":
        command += ["--address", args.address]
    if args.grpo_steps:
        command += ["--grpo-steps", str(args.grpo_steps)]
    return shlex.join([*command, "--resume"])


def stopped_message(stop: StopSignals, run_dir: Path, args: Any) -> str:
    return (
        f"cxr-rl train: stopped by {stop.signal_name} {where_it_stopped(run_dir)}; every process the run "
        f"started has been stopped.\nResume with: {resume_command(args, run_dir)}"
    )


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut short by the stop
            if line.strip():
                entries.append(json.loads(line))
    return entries


def _grpo_max_steps(run_dir: Path) -> int | None:
    with contextlib.suppress(OSError, json.JSONDecodeError, KeyError, TypeError):
        return json.loads((run_dir / "run_config.json").read_text())["grpo"]["max_steps"]
    return None
