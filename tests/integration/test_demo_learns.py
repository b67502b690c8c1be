"""The embedded demo's SFT learns to read its phantom X-rays (issue 15): on held-out MIMIC-style
phantoms the SFT adapter's greedy answers beat the best shortcut baseline (every label seen in
training, labels drawn at their training rates, its own answer on a blank image) in macro-F1, with
the paired bootstrap 95% interval above zero, and the answers differ across images.

A smaller config than the demo (fewer phantoms, SFT capped at LEARNING_STEPS optimizer steps), the
demo's own model, data preparation, SFT settings and prompt otherwise (`benchmarks/demo_sft.py`,
which prints the same figures for any config). Deterministic: seeded phantoms, model, split and
LoRA; one torch thread; greedy decoding; the bootstrap seeded. The margin asserted is the
interval's lower bound above zero, not a figure tuned to one run.
"""

import pytest

from benchmarks.demo_sft import sft_skill

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

PHANTOMS = 1200  # the demo draws more; enough held-out images for a paired interval
SCORED_IMAGES = 120
LEARNING_STEPS = 600  # optimizer steps, about 3 epochs of this config's SFT set


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,  # only the learning asserts: a crash on the way there still fails
    reason="issue 15 open: the tiny MedGemma's LoRA SFT does not yet learn to read its phantoms (greedy answers "
    "near-constant, below the every-seen-label shortcut); strict, so the day it learns this marker must go",
)
def test_the_demo_sft_reads_its_phantoms_better_than_any_shortcut(tmp_path):
    overrides = {"data": {"phantoms": {"n": PHANTOMS}}, "sft": {"training": {"max_steps": LEARNING_STEPS}}}
    figures = sft_skill(tmp_path / "run", overrides, scored=SCORED_IMAGES)
    assert figures["distinct_answer_sets"] > 1, (
        f"the same answer to every image: {figures['most_common_answer']}"
    )
    assert figures["skill_ci"][0] > 0, (
        f"SFT macro-F1 {figures['macro_f1']:.3f} vs {figures['best_shortcut']} "
        f"{figures['shortcut_macro_f1']:.3f}: skill {figures['skill']:+.3f}, 95% CI {figures['skill_ci']}"
    )
