"""The embedded demo's SFT learns to read its phantom X-rays (issue 15): on held-out MIMIC-style
phantoms the SFT adapter's greedy answers beat the best shortcut baseline (every label seen in
training, labels drawn at their training rates, its own answer on a blank image) in macro-F1, with
the paired bootstrap 95% interval above zero, and the answers differ across images.

A smaller config than the demo (SFT capped at EPOCHS epochs where the demo allows 8), the demo's
own model, data preparation, SFT settings and prompt otherwise (`benchmarks/demo_sft.py`, which
prints the same figures and a per-label table for any config). Deterministic: seeded phantoms,
model, split and LoRA; one torch thread; greedy decoding; the bootstrap seeded. The margin asserted
is the interval's lower bound above zero, not a figure tuned to one run (`python
benchmarks/demo_sft.py`, the demo's 8 epochs: skill +0.108, 95% CI +0.059 to +0.150).
"""

import pytest

from benchmarks.demo_sft import sft_skill

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

SCORED_IMAGES = 120
EPOCHS = 6
MIN_DISTINCT_ANSWERS = 8  # a model that read nothing gives one or two answer sets to every image


def test_the_demo_sft_reads_its_phantoms_better_than_any_shortcut(tmp_path):
    figures = sft_skill(tmp_path / "run", {"sft": {"training": {"epochs": EPOCHS}}}, scored=SCORED_IMAGES)
    summary = (
        f"SFT macro-F1 {figures['macro_f1']:.3f} vs {figures['best_shortcut']} "
        f"{figures['shortcut_macro_f1']:.3f}: skill {figures['skill']:+.3f}, 95% CI {figures['skill_ci']}; "
        f"{figures['distinct_answer_sets']} distinct answers; per label {figures['per_label']}"
    )
    assert figures["distinct_answer_sets"] >= MIN_DISTINCT_ANSWERS, summary
    assert figures["skill_ci"][0] > 0, summary
