"""How large each reward's GRPO advantages are, raw and multiplied by the reward's declared scale.

Under Dr. GRPO the advantage is r_i - mean(r) with no division by the group's std, so a reward in
tens to hundreds (nuanced) gives advantages ~100x those of a reward in [0, 1] (hard), and the KL
coefficient β and the gradient clip mean different things under each. Each reward therefore
declares a `scale` that the trainer multiplies its totals by; the defaults (hard 1, nuanced 1/100,
its exact-match credit) should put both on the same order. This measures it on simulated groups:
truths drawn label by label from CheXpert's frequencies, answers that keep each true label with
probability 0.7 and add each other label with probability 0.3·f(label), lengths of 150 to 400
tokens, and a share of answers without their <think> block.

    python -m rewards.advantage_scale [--groups 2000] [--seed 0]
"""

import argparse
import random
from dataclasses import dataclass

from rewards.label_frequencies import CHEXPERT_LABEL_FREQUENCIES
from rewards.protocol import RewardFunction, reward_scale
from rewards.registry import load_reward
from shared.labels import CHEXPERT_LABELS, NO_FINDING
from shared.schemas import RewardItem

FINDINGS = [label for label in CHEXPERT_LABELS if label != NO_FINDING]


@dataclass(frozen=True)
class AdvantageSize:
    raw: float  # mean |r_i - mean(r)| over all completions
    scaled: float  # the same with r multiplied by the reward's scale


def _labels_or_normal(labels: list[str]) -> list[str]:
    return labels or [NO_FINDING]


def simulated_groups(
    groups: int, group_size: int, malformed_share: float, seed: int
) -> list[list[RewardItem]]:
    rng = random.Random(seed)
    frequency = CHEXPERT_LABEL_FREQUENCIES
    out = []
    for _ in range(groups):
        truth = _labels_or_normal([label for label in FINDINGS if rng.random() < frequency[label]])
        group = []
        for _ in range(group_size):
            kept = [label for label in truth if rng.random() < 0.7]
            added = [
                label
                for label in CHEXPERT_LABELS
                if label not in truth and rng.random() < 0.3 * frequency[label]
            ]
            answer = [label for label in CHEXPERT_LABELS if label in _labels_or_normal(kept + added)]
            think = "" if rng.random() < malformed_share else "<think>reading the film</think>\n"
            group.append(
                RewardItem(
                    text=f"{think}<solution>{', '.join(answer)}</solution>",
                    labels=truth,
                    n_tokens=rng.randint(150, 400),
                )
            )
        out.append(group)
    return out


def mean_abs_advantage(reward: RewardFunction, groups: list[list[RewardItem]]) -> AdvantageSize:
    scale = reward_scale(reward)
    total, count, state = 0.0, 0, None
    for group in groups:
        scored, state = reward.score(group, state)
        rewards = [item.total for item in scored]
        mean = sum(rewards) / len(rewards)
        total += sum(abs(value - mean) for value in rewards)
        count += len(rewards)
    return AdvantageSize(raw=total / count, scaled=scale * total / count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--groups", type=int, default=2000, help="simulated X-rays (groups of 4 answers)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(f"{'reward':8} {'scale':>6} {'malformed':>9} {'mean |A| raw':>13} {'scaled':>8}")
    for share in (0.0, 0.05):
        groups = simulated_groups(args.groups, 4, share, args.seed)
        for name in ("hard", "nuanced"):
            reward = load_reward(name)
            size = mean_abs_advantage(reward, groups)
            print(f"{name:8} {reward_scale(reward):>6g} {share:>9.0%} {size.raw:>13.3f} {size.scaled:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
