"""Training plots across live reward swaps (`cxr-rl reward swap` hard -> nuanced -> hard): each swap
is marked with the reward's name and version, and the smoothing restarts there."""

from pathlib import Path

import pytest

from deploy.observability import ema, reward_segments, training_figures, training_plots

HARD, NUANCED = ("hard", "1+aaaaaaaa"), ("nuanced", "1+bbbbbbbb")


def metrics() -> list[dict]:
    entries = []
    for step in range(1, 31):
        name, version = HARD if step <= 10 or step > 20 else NUANCED
        raw = 0.2 + 0.01 * step if name == "hard" else -60.0 + step
        scale = 1.0 if name == "hard" else 0.01
        entries.append(
            {
                "phase": "grpo",
                "step": step,
                "reward_name": name,
                "reward_version": version,
                "reward_mean": raw,
                "reward_scale": scale,
                "reward_scaled_mean": raw * scale,
                "completion_len_mean": 40.0 + step,
                **({"reward/jaccard": raw} if name == "hard" else {"reward/format": -1.0}),
            }
        )
    return entries


def test_segments_follow_the_reward_swaps() -> None:
    segments = reward_segments(metrics())
    assert [(s.start, s.stop, s.name, s.version) for s in segments] == [
        (0, 10, *HARD),
        (10, 20, *NUANCED),
        (20, 30, *HARD),
    ]
    # Entries from before rewards were logged by name form one segment.
    assert [(s.start, s.stop) for s in reward_segments([{"step": 1}, {"step": 2}])] == [(0, 2)]


def _line_data(axis, label_part: str) -> list[tuple[list[float], list[float]]]:
    return [
        (list(line.get_xdata()), list(line.get_ydata()))
        for line in axis.get_lines()
        if label_part in str(line.get_label())
    ]


def test_reward_plot_marks_swaps_and_restarts_the_smoothing() -> None:
    figures = training_figures(metrics())
    try:
        raw_axis, scaled_axis = figures["reward.png"].axes
        for axis in (raw_axis, scaled_axis):
            texts = [text.get_text() for text in axis.texts]
            assert any("nuanced 1+bbbbbbbb" in text for text in texts), texts
            assert sum("hard 1+aaaaaaaa" in text for text in texts) == 2, texts  # the start and the swap back
            swap_lines = [line.get_xdata()[0] for line in axis.get_lines() if line.get_gid() == "reward-swap"]
            assert swap_lines == [10.5, 20.5]
        # One smoothed line per segment; each starts at its segment's first raw value (a restart),
        # not at a blend with the previous reward's values.
        smoothed = _line_data(raw_axis, "EMA")
        assert [xs[0] for xs, _ in smoothed] == [1, 11, 21]
        assert smoothed[1][1][0] == pytest.approx(-60.0 + 11)
        assert smoothed[2][1][0] == pytest.approx(0.2 + 0.01 * 21)
        assert smoothed[1][1] == pytest.approx(ema([-60.0 + step for step in range(11, 21)]))
        scaled = _line_data(scaled_axis, "EMA")
        assert scaled[1][1][0] == pytest.approx((-60.0 + 11) * 0.01)
        components = figures["reward_components.png"].axes[0]
        assert any("nuanced 1+bbbbbbbb" in text.get_text() for text in components.texts)
    finally:
        import matplotlib.pyplot as plt

        for figure in figures.values():
            plt.close(figure)


def test_plot_files_are_written(tmp_path: Path) -> None:
    written = training_plots(metrics(), tmp_path)
    assert sorted(path.name for path in written) == [
        "completion_length.png",
        "reward.png",
        "reward_components.png",
    ]
    assert all(path.stat().st_size > 1000 for path in written)
