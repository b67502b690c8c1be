"""The one checkpoint scheme of SFT and GRPO, on the file system: a `latest` pointer that names no
complete checkpoint is refused (never a silent fresh start), and pruning keeps the newest folders."""

import json

import pytest

from shared.errors import UserError
from trainer.checkpoint import latest_checkpoint, prune_checkpoints


def make_checkpoint(run_dir, step: int, complete: bool = True):
    folder = run_dir / "checkpoints" / f"step-{step:06d}"
    folder.mkdir(parents=True)
    if complete:
        (folder / "state.json").write_text(json.dumps({"step": step}))
    return folder


def test_a_run_without_checkpoints_has_no_latest(tmp_path):
    assert latest_checkpoint(tmp_path) is None


def test_latest_names_the_newest_complete_checkpoint(tmp_path):
    make_checkpoint(tmp_path, 1)
    newest = make_checkpoint(tmp_path, 2)
    (tmp_path / "checkpoints" / "latest").write_text("step-000002\n")
    assert latest_checkpoint(tmp_path) == newest


def test_a_latest_pointer_to_an_incomplete_checkpoint_is_refused(tmp_path):
    make_checkpoint(tmp_path, 1)
    make_checkpoint(tmp_path, 2, complete=False)
    (tmp_path / "checkpoints" / "latest").write_text("step-000002")
    with pytest.raises(UserError, match=r"latest names step-000002, which is not a complete checkpoint"):
        latest_checkpoint(tmp_path)


def test_pruning_keeps_the_newest_and_the_protected(tmp_path):
    for step in (1, 2, 3, 4):
        make_checkpoint(tmp_path, step)
    (tmp_path / "checkpoints" / "latest").write_text("step-000004")
    (tmp_path / "checkpoints" / "step-000005.partial").mkdir()  # an old run's unfinished write
    prune_checkpoints(tmp_path, keep=2, protect={"step-000001"})
    left = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert left == ["latest", "step-000001", "step-000003", "step-000004", "step-000005.partial"]
