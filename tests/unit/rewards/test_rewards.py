"""Both rewards against values computed by hand (the computation is in each case's comment)."""

import json

import pytest

from rewards.hard import HardReward, HardRewardConfig, jaccard
from rewards.label_frequencies import CHEXPERT_LABEL_FREQUENCIES, label_frequencies
from rewards.nuanced import NuancedReward, NuancedRewardConfig
from rewards.protocol import RewardError, label_counts, score_request
from shared.schemas import RewardItem, RewardRequest

AT, CM, ED, LO, NF = "Atelectasis", "Cardiomegaly", "Edema", "Lung Opacity", "No Finding"
PE, PN, PO, PTX, SD = "Pleural Effusion", "Pneumonia", "Pleural Other", "Pneumothorax", "Support Devices"


def completion(solution: str, think: str = "reasoning") -> str:
    return f"<think>{think}</think>\n<solution>{solution}</solution>"


def item(text: str, labels: list[str], n_tokens: int = 300) -> RewardItem:
    return RewardItem(text=text, labels=labels, n_tokens=n_tokens)


# False-positive cost with the default CheXpert frequencies: 5 + 15 * f / max f, max f = 0.561
# (Support Devices).
FP_SD = 5 + 15 * 0.561 / 0.561  # 20
FP_NF = 5 + 15 * 0.0889 / 0.561  # 7.3770...
FP_PTX = 5 + 15 * 0.0926 / 0.561  # 7.4759...
FP_PO = 5 + 15 * 0.0131 / 0.561  # 5.3503...
FP_CM = 5 + 15 * 0.1224 / 0.561  # 8.2727...


# ------------------------------------------------------------------------------------------------
# Hard reward: r = Jaccard(Y, Ŷ) - 0.1·[n < 250] for a valid completion, -0.1 otherwise
# ------------------------------------------------------------------------------------------------
HARD_CASES = [
    # exact match, long: |∩|=2, |∪|=2 -> 1.0
    ("exact-long", completion("Cardiomegaly, Pleural Effusion"), [CM, PE], 300, 1.0),
    # exact match, short (100 < 250): 1.0 - 0.1 = 0.9
    ("exact-short", completion("Cardiomegaly, Pleural Effusion"), [CM, PE], 100, 0.9),
    # one of two found: {CM} vs {CM, ED}: 1/2 = 0.5
    ("half", completion("Cardiomegaly"), [CM, ED], 300, 0.5),
    # one right, one wrong: {CM, PE} vs {CM, ED}: ∩={CM}, ∪={CM, ED, PE} -> 1/3
    ("third", completion("Cardiomegaly, Pleural Effusion"), [CM, ED], 300, 1 / 3),
    # disjoint, short: 0 - 0.1 = -0.1
    ("disjoint-short", completion("Pneumothorax"), [ED], 10, -0.1),
    # right labels but text outside the blocks: malformed -> -0.1, the lowest a valid answer gets
    ("extraneous", completion("Edema") + " Hope this helps.", [ED], 10, -0.1),
    # no tags at all: malformed -> -0.1, long or not
    ("no-tags", "Edema", [ED], 300, -0.1),
    # an empty solution names no label: malformed -> -0.1
    ("empty-solution", completion(""), [ED], 300, -0.1),
    # duplicates do not change the sets: {ED} vs {ED} -> 1.0
    ("duplicates", completion("Edema, edema"), [ED], 300, 1.0),
    # the threshold is strict: 249 tokens is short (1 - 0.1), 250 is not (1.0)
    ("249-tokens", completion("Edema"), [ED], 249, 0.9),
    ("250-tokens", completion("Edema"), [ED], 250, 1.0),
    # hedged entry is no label in strict mode: no label named, malformed -> -0.1
    ("hedged", completion("possible pneumonia"), [PN], 300, -0.1),
    # synonyms count: PTX + enlarged heart = {PTX, CM} vs {CM}: 1/2
    ("synonyms", completion("PTX, enlarged heart"), [CM], 300, 0.5),
    # empty truth and empty solution: Jaccard(∅, ∅) never arises, the empty answer is malformed
    ("both-empty", completion(""), [], 300, -0.1),
    # empty truth (every finding uncertain): any valid answer has Jaccard 0
    ("empty-truth", completion("No Finding"), [], 300, 0.0),
]


@pytest.mark.parametrize(
    ("case_id", "text", "truth", "n_tokens", "expected"), HARD_CASES, ids=[c[0] for c in HARD_CASES]
)
def test_hard_reward(case_id: str, text: str, truth: list[str], n_tokens: int, expected: float) -> None:
    [scored], state = HardReward().score([item(text, truth, n_tokens)], None)
    assert scored.total == pytest.approx(expected), case_id
    assert scored.total == pytest.approx(sum(scored.components.values()))
    assert state is None


def test_hard_reward_config() -> None:
    reward = HardReward({"length_penalty": 0.5, "min_tokens": 100})
    # 99 < 100 tokens: 1.0 - 0.5 = 0.5; 100 tokens: 1.0
    [short, long], _ = reward.score(
        [item(completion("Edema"), [ED], 99), item(completion("Edema"), [ED], 100)], None
    )
    assert (short.total, long.total) == (0.5, 1.0)
    assert reward.version != HardReward().version  # settings are part of the version the trainer logs
    with pytest.raises(ValueError):
        HardRewardConfig(length_penalty=-1)


def test_jaccard() -> None:
    assert jaccard({CM, ED}, {ED, PE, PTX}) == 1 / 4
    assert jaccard(set(), set()) == 1.0


# ------------------------------------------------------------------------------------------------
# Nuanced reward
# ------------------------------------------------------------------------------------------------
NUANCED_CASES = [
    # exact match: +100
    ("exact", completion("Cardiomegaly, Pleural Effusion"), [CM, PE], 100.0),
    # {CM} vs {CM, ED}: recall 30·1/2 = 15, precision 20·1/1 = 20 -> 35
    ("partial", completion("Cardiomegaly"), [CM, ED], 35.0),
    # {ED, PTX} vs {ED}: recall 30·1/1 = 30, precision 20·1/2 = 10, false positive PTX -7.045 -> 32.954
    ("partial-with-fp", completion("Edema, Pneumothorax"), [ED], 30 + 10 - FP_PTX),
    # wrong No Finding (8.9% of CheXpert's frontal images): 0 + 0 - 7.377
    ("wrong-no-finding", completion("No Finding"), [PE], -FP_NF),
    # a wrong Support Devices (the most frequent label) costs 20, a wrong Pleural Other only 5.35
    ("wrong-support-devices", completion("Support Devices"), [ED], -FP_SD),
    ("wrong-pleural-other", completion("Pleural Other"), [ED], -FP_PO),
    # exact on the set but one invalid entry: 100 - 100 = 0
    ("invalid-label", completion("Edema, Banana"), [ED], 0.0),
    # exact on the set with a duplicate: 100 - 25 = 75
    ("duplicate", completion("Edema, edema"), [ED], 75.0),
    # Malformed answers pay the format term -(100 + 200 + 50) = -350 on top of what they earn.
    # text outside the blocks: 100 - 10 - 350 = -260
    ("extraneous", completion("Edema") + "\nThanks!", [ED], -260.0),
    # no think block: 100 - 350 = -250
    ("missing-think", "<solution>Edema</solution>", [ED], -250.0),
    # no tags at all: no labels read; extraneous -10, format -350 -> -360
    ("no-tags", "Edema", [ED], -360.0),
    # empty solution: no label named: -350
    ("empty-solution", completion(""), [ED], -350.0),
    # hedged entry: invalid -100, and no label named: -100 - 350 = -450
    ("hedged", completion("possible pneumonia"), [PN], -450.0),
    # {NF, CM} vs {CM}: recall 30, precision 20·1/2 = 10, false positive NF -7.377 -> 32.62
    ("no-finding-conflict", completion("No Finding, Cardiomegaly"), [CM], 30 + 10 - FP_NF),
]


@pytest.mark.parametrize(
    ("case_id", "text", "truth", "expected"), NUANCED_CASES, ids=[c[0] for c in NUANCED_CASES]
)
def test_nuanced_reward(case_id: str, text: str, truth: list[str], expected: float) -> None:
    [scored], state = NuancedReward().score([item(text, truth)], None)
    assert scored.total == pytest.approx(expected), (case_id, scored.components)
    assert scored.total == pytest.approx(sum(scored.components.values()))
    assert set(scored.components) == {
        "exact_match",
        "partial_recall",
        "partial_precision",
        "false_positives",
        "invalid_labels",
        "duplicates",
        "extraneous_text",
        "format",
        "repetition",
        "collapse",
        "floor",
    }
    assert len(state["window"]) == (1 if scored.predicted_labels else 0)


def test_frequent_false_positives_cost_more() -> None:
    reward = NuancedReward()
    assert reward.false_positive_cost[SD] > reward.false_positive_cost[NF] > reward.false_positive_cost[PO]
    assert reward.false_positive_cost[CM] == pytest.approx(FP_CM)


def test_window_penalty_after_a_run_of_identical_predictions() -> None:
    reward = NuancedReward()
    same = [item(completion("No Finding"), [NF]) for _ in range(100)]
    scored, state = reward.score(same, None)
    # Items 1-70: No Finding holds at most 70 of the 100 slots -> exact match 100.
    assert [s.total for s in scored[:70]] == [100.0] * 70
    # Item 71: 71 > 70, one excess repetition: 100 - 30 - 50 = 20.
    assert scored[70].components["repetition"] == -30.0 and scored[70].components["collapse"] == -50.0
    assert scored[70].total == 20.0
    # Item 100: 30 excess repetitions: 100 - 900 - 50 = -850, lifted to the valid floor, -200.
    assert scored[99].total == -200.0 and scored[99].components["floor"] == 650.0
    # A different answer next is not penalised: Edema holds 1 slot -> 100.
    # Then No Finding again: 99 of the last 100, 29 excess: below the floor again -> -200.
    [edema, no_finding], _ = reward.score(
        [item(completion("Edema"), [ED]), item(completion("No Finding"), [NF])], state
    )
    assert (edema.total, no_finding.total) == (100.0, -200.0)


def test_unparseable_completions_do_not_enter_the_window() -> None:
    reward = NuancedReward()
    _, state = reward.score(
        [item("garbage", [ED]), item(completion(""), [ED]), item(completion("Edema"), [ED])], None
    )
    assert state["window"] == [ED]


def test_window_survives_a_restart() -> None:
    batch = [item(completion("No Finding"), [NF]) for _ in range(100)]
    uninterrupted, _ = NuancedReward().score(batch, None)
    # A worker that scores 60 items, is replaced by a fresh one (restart), which gets the carried
    # state through a JSON checkpoint and scores the remaining 40.
    first, state = NuancedReward().score(batch[:60], None)
    state = json.loads(json.dumps(state))
    second, _ = NuancedReward().score(batch[60:], state)
    assert [s.total for s in first + second] == [s.total for s in uninterrupted]
    assert second[10].total == 20.0  # the 71st prediction is penalised across the restart


def test_retried_batch_scores_the_same() -> None:
    reward = NuancedReward({"window_size": 5})
    state = {"format": 1, "window": [NF] * 4}
    batch = [item(completion("No Finding"), [NF]), item(completion("Edema"), [ED])]
    first = reward.score(batch, state)
    again = reward.score(batch, state)
    assert first == again
    assert state == {"format": 1, "window": [NF] * 4}  # the input state is not modified


def test_bad_state_is_a_clear_error() -> None:
    with pytest.raises(RewardError, match="window"):
        NuancedReward().score([item(completion("Edema"), [ED])], {"format": 1, "window": ["Banana"]})
    with pytest.raises(RewardError, match="format-1"):
        NuancedReward().score([item(completion("Edema"), [ED])], {"something": "else"})


def test_nuanced_config_validation() -> None:
    with pytest.raises(ValueError, match="missing"):
        NuancedRewardConfig(label_frequencies={NF: 0.5})
    with pytest.raises(ValueError, match="collapse_min_predictions is gone"):
        NuancedRewardConfig(window_size=10, collapse_min_predictions=10)
    with pytest.raises(ValueError, match="format_penalty"):
        NuancedRewardConfig(format_penalty=0)  # the margin must be positive
    frequencies = dict(CHEXPERT_LABEL_FREQUENCIES, **{PO: 0.0})
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        NuancedRewardConfig(label_frequencies=frequencies)


def test_label_frequencies_from_a_split() -> None:
    frequencies = label_frequencies([[NF], [CM, ED], [CM]])
    assert frequencies[CM] == 0.6667 and frequencies[NF] == 0.3333  # shares to 4 decimals
    assert frequencies[PTX] == 0.1667  # unseen labels get half a count: 0.5 / 3
    NuancedReward({"label_frequencies": frequencies})  # a valid config


def test_label_counts_per_batch() -> None:
    request = RewardRequest(
        batch_id="b",
        items=[
            item(completion("Cardiomegaly, Edema"), [CM]),  # CM tp, ED fp
            item(completion("Atelectasis"), [AT, PE]),  # AT tp, PE fn
            item(completion("Edema") + " trailing", [ED]),  # invalid for the hard reward: ED fn
        ],
    )
    hard = score_request(HardReward(), request).label_counts
    assert (hard[CM].tp, hard[ED].fp, hard[ED].fn, hard[AT].tp, hard[PE].fn) == (1, 1, 1, 1, 1)
    assert sum(c.tp + c.fp + c.fn for c in hard.values()) == 5
    nuanced = score_request(NuancedReward(), request).label_counts
    assert (nuanced[ED].tp, nuanced[ED].fp, nuanced[ED].fn) == (1, 1, 0)  # nuanced credits the trailing one
    assert set(nuanced) == set(hard) and len(hard) == 14


def test_label_counts_helper() -> None:
    counts = label_counts([[CM], []], [[CM, ED], [ED]])
    assert (counts[CM].tp, counts[ED].fn, counts[ED].fp) == (1, 2, 0)
