"""A malformed answer must not out-score a valid one for the same X-ray, under either reward.

Nuanced: valid answers score at least the floor (-200 by default); a malformed one pays the format
term -(100 - (-200) + 50) = -350 on top of what it earns, so it scores at most 100 - 350 = -250.
Hard: a malformed answer scores -λ_len, the lowest a valid answer can score.
"""

import itertools

import pytest

from rewards.hard import HardReward
from rewards.nuanced import NuancedReward
from shared.labels import CHEXPERT_LABELS
from shared.schemas import RewardItem

CM, ED, NF, PE = "Cardiomegaly", "Edema", "No Finding", "Pleural Effusion"
TRUTH = [CM, ED]


def valid(solution: str, n_tokens: int = 300) -> RewardItem:
    return RewardItem(
        text=f"<think>x</think>\n<solution>{solution}</solution>", labels=TRUTH, n_tokens=n_tokens
    )


def malformed_answers(n_tokens: int = 300) -> list[RewardItem]:
    texts = [
        "<solution>Cardiomegaly, Edema</solution>",  # right labels, no think block
        "<think>x</think><solution>Cardiomegaly, Edema</solution> Hope this helps.",  # text outside
        "<think>x <solution>Cardiomegaly, Edema</solution></think>",  # nested
        "<think>x</think><solution>Cardiomegaly</solution><solution>Edema</solution>",  # repeated
        "<think>x</think><solution></solution>",  # no label named
        "<think>x</think><solution>possible edema</solution>",  # hedged only: no label
        "Cardiomegaly, Edema",  # no tags
        "",
    ]
    return [RewardItem(text=text, labels=TRUTH, n_tokens=n_tokens) for text in texts]


def valid_answers(n_tokens: int = 300) -> list[RewardItem]:
    wrong = [label for label in CHEXPERT_LABELS if label not in TRUTH]
    return [
        valid("Cardiomegaly, Edema", n_tokens),  # exact
        valid("Cardiomegaly", n_tokens),  # partial
        valid("Pleural Effusion", n_tokens),  # wrong
        valid(", ".join(wrong), n_tokens),  # every wrong label
        valid("Edema, Banana, Apple, Pear", n_tokens),  # three entries that name no label
        valid("Edema, edema, edema, edema, edema", n_tokens),  # four duplicates
    ]


def test_missing_think_with_the_right_labels_scores_below_a_valid_partial_answer() -> None:
    reward = NuancedReward()
    [malformed], _ = reward.score([malformed_answers()[0]], None)
    [partial], _ = NuancedReward().score([valid("Cardiomegaly")], None)
    # Valid partial: recall 30·1/2 = 15, precision 20·1/1 = 20 -> 35.
    assert partial.total == 35.0
    # Missing think, exact labels: 100 (exact) - 350 (format: 100 + 200 + 50) = -250.
    assert malformed.components["format"] == -350.0
    assert malformed.total == -250.0 < partial.total


def test_every_malformed_answer_scores_below_every_valid_answer_nuanced() -> None:
    reward = NuancedReward()
    malformed = [s.total for s in reward.score(malformed_answers(), None)[0]]
    valids = [s.total for s in reward.score(valid_answers(), None)[0]]
    assert max(malformed) < min(valids), (malformed, valids)
    assert min(valids) >= -200.0  # the floor


def test_malformed_stays_below_valid_in_a_collapsed_window() -> None:
    # The guard penalises both, but a valid answer never falls below the floor (-200), and a
    # malformed one is at most -250 whatever the window says.
    reward = NuancedReward({"window_size": 10})
    state = {"format": 1, "window": ["Cardiomegaly|Edema"] * 10}
    for malformed_item, valid_item in itertools.product(malformed_answers(), valid_answers()):
        [bad], _ = reward.score([malformed_item], state)
        [good], _ = reward.score([valid_item], state)
        assert bad.total < good.total, (malformed_item.text, bad.components, good.components)


def test_floor_is_a_reported_component() -> None:
    # {Edema, Pleural Effusion} for {Cardiomegaly, Edema}: recall 30·1/2 = 15, precision 20·1/2 = 10,
    # a false positive, and four entries that name no label: -400. Below -200, so the "floor"
    # component lifts it back to exactly -200.
    [scored], _ = NuancedReward().score([valid("Edema, Pleural Effusion, A, B, C, D")], None)
    assert scored.total == -200.0
    assert scored.components["floor"] > 0
    assert scored.total == pytest.approx(sum(scored.components.values()))


@pytest.mark.parametrize("malformed_tokens", [10, 300])
@pytest.mark.parametrize("valid_tokens", [10, 300])
def test_hard_reward_never_ranks_a_malformed_answer_above_a_valid_one(
    malformed_tokens: int, valid_tokens: int
) -> None:
    reward = HardReward()  # λ_len = 0.1 below 250 tokens
    malformed = [s.total for s in reward.score(malformed_answers(malformed_tokens), None)[0]]
    valids = [s.total for s in reward.score(valid_answers(valid_tokens), None)[0]]
    # A long malformed answer used to score 0, above a short valid one naming no right label (-0.1).
    assert malformed == [-0.1] * len(malformed)
    assert max(malformed) <= min(valids), (malformed, valids)
