"""How the driver turns SIGTERM and Ctrl-C into a clean stop, and what it says afterwards (the whole
path on a real run: tests/integration/test_driver_signals.py)."""

import json
import os
import signal
from argparse import Namespace

import pytest

from deploy.interrupts import (
    RunStopped,
    StopSignals,
    keep_sigterm_handler,
    resume_command,
    stopped_message,
    where_it_stopped,
)


@pytest.fixture()
def sigint_from_a_terminal():
    """SIGINT as a terminal's Ctrl-C reaches Python (KeyboardInterrupt), even where the tests were
    started in the background, whose SIGINT a shell ignores and StopSignals then leaves ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_from_a_terminal")
def test_sigterm_stops_once_and_a_second_signal_does_not_cut_the_cleanup(capsys):
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        with pytest.raises(RunStopped):
            os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # during the cleanup: noted, not raised
        os.kill(os.getpid(), signal.SIGINT)
    assert (stop.signal_name, stop.exit_status) == ("SIGTERM", 143)
    assert capsys.readouterr().err.count("already stopping") == 2
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.usefixtures("sigint_from_a_terminal")
def test_ctrl_c_gives_exit_status_130():
    with StopSignals() as stop, pytest.raises(KeyboardInterrupt):  # Ray re-raises it as a plain one
        os.kill(os.getpid(), signal.SIGINT)
    assert (stop.signal_name, stop.exit_status) == ("SIGINT", 130)


def test_an_inherited_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGINT)  # a background job's Ctrl-C: nothing happens
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert stop.received is None
    finally:
        signal.signal(signal.SIGINT, previous)


def write_jsonl(path, entries):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))


def test_where_it_stopped_reads_the_run_folder(tmp_path):
    assert where_it_stopped(tmp_path) == "during start-up, before any training step"
    write_jsonl(
        tmp_path / "sft" / "metrics.jsonl",
        [{"kind": "step", "step": 1, "epoch": 1}, {"kind": "epoch", "step": 1, "epoch": 1},
         {"kind": "step", "step": 2, "epoch": 2}],
    )  # fmt: skip
    assert where_it_stopped(tmp_path) == "in SFT at step 2, epoch 2 (SFT resumes from epoch 1)"
    (tmp_path / "sft" / "sft_summary.json").write_text("{}")
    assert where_it_stopped(tmp_path) == "after SFT, before the first GRPO step"
    (tmp_path / "run_config.json").write_text(json.dumps({"grpo": {"max_steps": 12}}))
    write_jsonl(tmp_path / "metrics.jsonl", [{"phase": "eval", "step": 0}, {"phase": "grpo", "step": 1}])
    with (tmp_path / "metrics.jsonl").open("a") as log:
        log.write('{"phase": "grpo", "st')  # a line the stop cut short
    assert where_it_stopped(tmp_path) == "at GRPO step 1 of 12 (last checkpoint: none yet)"
    (tmp_path / "grpo" / "checkpoints").mkdir(parents=True)
    (tmp_path / "grpo" / "checkpoints" / "latest").write_text("step-000001\n")
    assert where_it_stopped(tmp_path) == "at GRPO step 1 of 12 (last checkpoint: step-000001)"


def test_the_resume_command_repeats_what_matters(tmp_path):
    run_dir = tmp_path / "my runs" / "a"
    args = Namespace(config="configs/x.yaml", address="auto", grpo_steps=None)
    assert (
        resume_command(args, run_dir)
        == f"cxr-rl train --config configs/x.yaml --run-dir '{run_dir}' --resume"
    )
    args = Namespace(config=None, address="local", grpo_steps=7)
    assert resume_command(args, run_dir).endswith("--address local --grpo-steps 7 --resume")
    stop = StopSignals()
    stop.received = signal.SIGINT
    message = stopped_message(stop, run_dir, args)
    assert message.startswith("cxr-rl train: stopped by SIGINT during start-up")
    assert message.splitlines()[-1] == f"Resume with: {resume_command(args, run_dir)}"


def test_ray_init_does_not_take_sigterm_away():
    """ray.init() puts in a SIGTERM handler that exits at once; the driver keeps its own."""
    with StopSignals():
        ours = signal.getsignal(signal.SIGTERM)
        with keep_sigterm_handler():
            signal.signal(signal.SIGTERM, lambda *_: None)  # what ray.init() does
        assert signal.getsignal(signal.SIGTERM) == ours
