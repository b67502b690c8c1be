"""The paper's hard reward: Jaccard(Y, Ŷ) for a valid completion, minus λ_len when it is short.

    r = |Y ∩ Ŷ| / |Y ∪ Ŷ| - λ_len·[n < T]   for an answer that parsed (rewards.parsing: the
                                            strict contract kept, at least one label named)
    r = -λ_len·[T > 0]                      otherwise (malformed)

Y is the ground truth, Ŷ the parsed labels, n the completion's length in tokens and T the length
threshold (250 tokens in the paper). Readings of the paper made here:
- A malformed completion scores -λ_len, the lowest score a valid one can get (a short answer with
  no right label), whatever its length. The paper's 0 for it would put a long malformed answer
  above a short valid one with no right label (0 > -0.1), and GRPO would learn to break the format
  when unsure. The component is reported as `format`.
- Jaccard(∅, ∅) = 1 by definition, but it never arises in scoring: an answer that names no label
  does not parse (the prompt asks for labels, "No Finding" for a normal study). An X-ray whose truth
  is empty (every finding uncertain, under U-Zeros) scores 0 - λ_len·[n < T] for every valid answer.
- λ_len defaults to 0.1, a tenth of a perfect answer: enough to tip GRPO's group-relative advantage
  towards longer reasoning between otherwise equal completions, never enough to outweigh a label.
- `scale` (default 1) is what the trainer multiplies the reward by before taking advantages.
"""

import hashlib
from typing import Any

from pydantic import BaseModel, Field

from rewards.parsing import ParserConfig, parse_completion
from rewards.protocol import ScoredItem
from shared.config import StrictModel
from shared.schemas import RewardItem

FORMULA_VERSION = "2"


class HardRewardConfig(StrictModel, frozen=True):
    length_penalty: float = Field(0.1, ge=0.0, description="λ_len, subtracted when the completion is short")
    min_tokens: int = Field(250, ge=0, description="completions shorter than this many tokens are penalised")
    scale: float = Field(
        1.0, gt=0.0, allow_inf_nan=False, description="the trainer multiplies the reward by this"
    )
    parser: ParserConfig = Field(ParserConfig(mode="strict"), description="how completions are read")


def jaccard(truth: set[str], predicted: set[str]) -> float:
    union = truth | predicted
    return len(truth & predicted) / len(union) if union else 1.0


def config_version(formula_version: str, config: BaseModel) -> str:
    """A version that changes when the formula or any setting changes: the trainer logs it per sample."""
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:8]
    return f"{formula_version}+{digest}"


class HardReward:
    name = "hard"

    def __init__(self, config: HardRewardConfig | dict[str, Any] | None = None):
        self.config = HardRewardConfig.model_validate(config or {})
        self.version = config_version(FORMULA_VERSION, self.config)
        self.scale = self.config.scale

    def score_one(self, item: RewardItem) -> ScoredItem:
        config = self.config
        parsed = parse_completion(item.text, config.parser)
        if not parsed.valid:
            lowest_valid = -config.length_penalty + 0.0 if config.min_tokens > 0 else 0.0  # no -0.0
            components = {"jaccard": 0.0, "length_penalty": 0.0, "format": lowest_valid}
            return ScoredItem(lowest_valid, components, [])  # no labels credited
        masked = set(item.masked)  # the `drop` policy's uncertain labels: neither hit nor false alarm
        overlap = jaccard(set(item.labels) - masked, set(parsed.labels) - masked)
        penalty = -config.length_penalty + 0.0 if item.n_tokens < config.min_tokens else 0.0
        components = {"jaccard": overlap, "length_penalty": penalty, "format": 0.0}
        return ScoredItem(overlap + penalty, components, parsed.labels)

    def score(self, items: list[RewardItem], state: dict[str, Any] | None) -> tuple[list[ScoredItem], None]:
        del state  # the hard reward carries nothing between batches
        return [self.score_one(item) for item in items], None
