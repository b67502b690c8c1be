"""What the run learned, in plain words: the lines `cxr-rl train` prints at the end and `summary.md`
opens with, read from what `summary.json` holds (so they say nothing its figures do not show).

- SFT: the step-0 point (the SFT adapter before any GRPO step) against the best shortcut baseline
  (every label seen in training, labels drawn at their training rates, its answer on a blank
  image) on the ID selection set, with the paired bootstrap interval; "beats" only when the whole
  interval lies above zero.
- GRPO: the mean reward on the RL set over its first and last steps.
- The chosen checkpoint's ID and OOD macro-F1 with their intervals, and how both moved from SFT.
"""

from typing import Any

REWARD_WINDOW = 3  # steps averaged at each end of GRPO: one step's reward is noisy


def _ci(ci: list[float] | None) -> str:
    return f" (95% CI {ci[0]:.2f} to {ci[1]:.2f})" if ci else ""


def skill_line(who: str, point: dict[str, Any]) -> str:
    """One sentence on how a checkpoint's ID macro-F1 compares with the best shortcut's."""
    skill, ci = point.get("skill_over_baseline"), point.get("skill_over_baseline_ci")
    if skill is None:
        return f"{who}: no skill figure (no ID selection set was scored)."
    shortcut = point.get("best_shortcut") or "the best shortcut"
    distinct = point.get("distinct_answer_sets")
    answers = ""
    if distinct == 0:
        answers = "; none of its answers could be read"
    elif distinct == 1:
        answers = "; it gave the same answer to every image"
    elif distinct is not None:
        answers = f"; {distinct} different answers across the images"
    if ci and ci[0] > 0:
        return (
            f"{who} beats the best shortcut ({shortcut}) by {skill:.2f} macro-F1{_ci(ci)} on the ID "
            f"validation images: it reads the images{answers}."
        )
    return (
        f"{who} does not beat the best shortcut ({shortcut}): {skill:+.2f} macro-F1{_ci(ci)} on the ID "
        f"validation images, an interval that does not lie above zero: nothing shows it reads the images{answers}."
    )


def reward_line(rewards: list[float]) -> str | None:
    if len(rewards) < 2:
        return None
    window = max(1, min(REWARD_WINDOW, len(rewards) // 2))
    first, last = sum(rewards[:window]) / window, sum(rewards[-window:]) / window
    if f"{first:.3f}" == f"{last:.3f}":
        return f"GRPO: the mean reward on the RL set stayed at {last:.3f} over {len(rewards)} steps."
    if window == 1:
        span = f"from {first:.3f} (step 1) to {last:.3f} (step {len(rewards)})"
    else:
        span = (
            f"from {first:.3f} (mean of steps 1-{window}) to {last:.3f} "
            f"(mean of steps {len(rewards) - window + 1}-{len(rewards)})"
        )
    verb = "rose" if last > first else "fell"
    return f"GRPO: the mean reward on the RL set {verb} {span}."


def learned_lines(summary: dict[str, Any]) -> list[str]:
    """Plain-words lines from a summary.json's content."""
    points = {point["step"]: point for point in summary.get("validation", [])}
    lines = []
    if 0 in points:
        lines.append(skill_line("SFT", points[0]))
    line = reward_line(summary.get("grpo_rewards", []))
    if line:
        lines.append(line)
    chosen_step = (summary.get("selection") or {}).get("chosen", {}).get("step")
    chosen = points.get(chosen_step)
    if chosen is not None and chosen_step != 0:
        lines.append(skill_line(f"The chosen checkpoint (GRPO step {chosen_step})", chosen))
    if points:
        first, last = points[min(points)], points[max(points)]
        for prefix, name in (("id", "ID"), ("ood", "OOD")):
            if first.get(f"{prefix}_macro_f1") is None or last.get(f"{prefix}_macro_f1") is None:
                continue
            lines.append(
                f"{name} validation macro-F1: {first[f'{prefix}_macro_f1']:.3f}{_ci(first.get(f'{prefix}_ci'))} "
                f"at step {first['step']}, {last[f'{prefix}_macro_f1']:.3f}{_ci(last.get(f'{prefix}_ci'))} "
                f"at step {last['step']}."
            )
    return lines
