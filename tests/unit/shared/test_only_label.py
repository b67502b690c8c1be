"""Only Label, the paper's "direct label output with no rationale": its completions are an empty
think block and the labels, `<think></think>` then `<solution>...</solution>`. The prompt asks for
exactly that, and the parser, trace validation, the hard reward's format rule, the nuanced reward
and the synthetic SFT targets all accept it; Free Reasoning asks for a concise analysis."""

import random

import pytest

from dataprep.traces.prompts import teacher_prompt
from dataprep.traces.validation import check_trace
from rewards.hard import HardReward
from rewards.nuanced import NuancedReward
from rewards.parsing import parse_completion
from shared.prompts import BUILTIN_FORMATS, PromptRegistry
from shared.schemas import RewardItem
from trainer.templates import synthetic_target

LABELS = ["Cardiomegaly", "Pleural Effusion"]
ONLY_LABEL = "<think></think>\n<solution>Cardiomegaly, Pleural Effusion</solution>"


def test_the_prompt_asks_for_labels_and_an_empty_think_block():
    only_label = BUILTIN_FORMATS["only_label"]
    assert not only_label.rationale
    text = only_label.user_text()
    assert "<think></think>" in text and "no rationale" in text.lower()
    assert "reasoning" not in only_label.instruction.lower()
    for name, prompt in BUILTIN_FORMATS.items():
        if name != "only_label" and prompt.kind != "tiny":
            assert prompt.rationale and "<think>your reasoning</think>" in prompt.user_text()


def test_free_reasoning_asks_for_a_concise_analysis():
    assert "concise analysis" in BUILTIN_FORMATS["free_reasoning"].instruction


def test_the_parser_reads_an_only_label_answer():
    result = parse_completion(ONLY_LABEL)
    assert result.valid and result.labels and not result.problems
    assert (result.think, result.labels) == ("", LABELS)


def test_trace_validation_accepts_only_label_traces_and_only_those_without_reasoning():
    assert check_trace(ONLY_LABEL, LABELS, rationale=False).accepted
    with_reasoning = "<think>The heart is big.</think>\n<solution>Cardiomegaly, Pleural Effusion</solution>"
    verdict = check_trace(with_reasoning, LABELS, rationale=False)
    assert (verdict.accepted, verdict.reason) == (False, "unexpected reasoning")
    assert check_trace(ONLY_LABEL, LABELS).reason == "empty reasoning"  # reasoning formats need it
    assert check_trace(with_reasoning, LABELS).accepted


def test_the_teacher_is_told_to_leave_the_think_block_empty():
    prompt = teacher_prompt(LABELS, BUILTIN_FORMATS["only_label"])
    assert "<think></think>" in prompt and "Write the reasoning" not in prompt


def test_the_hard_reward_format_rule_accepts_an_empty_think_block():
    reward = HardReward({"min_tokens": 0})
    scored = reward.score_one(RewardItem(text=ONLY_LABEL, n_tokens=12, labels=LABELS))
    assert scored.total == 1.0 and scored.components["jaccard"] == 1.0
    broken = reward.score_one(RewardItem(text="<solution>Cardiomegaly</solution>", n_tokens=5, labels=LABELS))
    assert broken.total == 0.0  # no think block at all is still a format failure


def test_the_nuanced_reward_charges_no_format_penalty():
    scored, _ = NuancedReward().score([RewardItem(text=ONLY_LABEL, n_tokens=12, labels=LABELS)], None)
    assert scored[0].components["format"] == 0.0 and scored[0].components["exact_match"] == 100.0


@pytest.mark.parametrize("labels", [[], ["Edema"], ["Edema", "Support Devices"]])
def test_synthetic_only_label_targets_carry_no_rationale(labels):
    target = synthetic_target(labels, "only_label", random.Random(0))
    answer = ", ".join(labels or ["No Finding"])
    assert target == f"<think></think>\n<solution>{answer}</solution>"
    assert check_trace(target, labels or ["No Finding"], rationale=False).accepted


def test_a_user_format_can_drop_the_rationale(tmp_path):
    path = tmp_path / "formats.yaml"
    path.write_text(
        "labels_first:\n  instruction: Name the labels only.\n  rationale: false\nterse: Be brief.\n"
    )
    prompts = PromptRegistry()
    prompts.add_from_file(path)
    assert not prompts.get("labels_first").rationale and prompts.get("terse").rationale
    assert "<think></think>" in prompts.get("labels_first").user_text()
