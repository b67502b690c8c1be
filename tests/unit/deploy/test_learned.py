"""The run's closing lines say in plain words whether SFT beat the best shortcut, and how GRPO moved
the reward, from summary.json's figures."""

from deploy.learned import learned_lines, reward_line, skill_line


def point(step: int, skill: float, ci: list[float], distinct: int) -> dict:
    return {"step": step, "id_macro_f1": 0.5, "id_ci": [0.4, 0.6], "ood_macro_f1": 0.3, "ood_ci": [0.2, 0.4],
            "skill_over_baseline": skill, "skill_over_baseline_ci": ci, "distinct_answer_sets": distinct,
            "best_shortcut": "training prevalence above 0"}  # fmt: skip


def test_a_skill_whose_interval_is_above_zero_is_said_to_beat_the_shortcut():
    line = skill_line("SFT", point(0, 0.21, [0.15, 0.27], 9))
    assert line.startswith("SFT beats the best shortcut (training prevalence above 0) by 0.21 macro-F1")
    assert "(95% CI 0.15 to 0.27)" in line and "9 different answers" in line


def test_an_interval_reaching_zero_is_said_plainly_to_show_nothing():
    line = skill_line("SFT", point(0, 0.05, [-0.01, 0.11], 1))
    assert line.startswith("SFT does not beat the best shortcut") and "nothing shows it reads" in line
    assert "the same answer to every image" in line


def test_reward_line_compares_the_first_and_last_steps():
    assert reward_line([0.1, 0.2, 0.3, 0.5, 0.6, 0.7]) == (
        "GRPO: the mean reward on the RL set rose from 0.200 (mean of steps 1-3) to 0.600 (mean of steps 4-6)."
    )
    assert reward_line([0.3]) is None


def test_learned_lines_cover_sft_grpo_and_both_validation_sets():
    summary = {
        "validation": [point(0, 0.2, [0.1, 0.3], 5), point(4, 0.25, [0.15, 0.35], 6)],
        "grpo_rewards": [0.2, 0.4],
        "selection": {"chosen": {"step": 4}},
    }
    lines = learned_lines(summary)
    assert lines[0].startswith("SFT beats") and lines[1].startswith(
        "GRPO: the mean reward on the RL set rose"
    )
    assert lines[2].startswith("The chosen checkpoint (GRPO step 4) beats")
    assert lines[3].startswith("ID validation macro-F1: 0.500") and lines[4].startswith(
        "OOD validation macro-F1"
    )


def test_unreadable_answers_and_a_flat_reward_are_said_plainly():
    assert "none of its answers could be read" in skill_line("SFT", point(0, -0.2, [-0.3, -0.1], 0))
    assert (
        reward_line([-0.1, -0.1, -0.1, -0.1])
        == "GRPO: the mean reward on the RL set stayed at -0.100 over 4 steps."
    )
