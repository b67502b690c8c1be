"""The paper's hard reward: Jaccard(Y, Ŷ) for a valid completion, minus λ_len when it is short.

    r = 0                                  if the completion is not valid (strict contract)
    r = |Y ∩ Ŷ| / |Y ∪ Ŷ| - λ_len·[n < T]   otherwise

Labels masked for the X-ray (`RewardItem.masked`, the `drop` uncertainty policy) are taken out of
both Y and Ŷ first: naming an uncertain finding is neither a hit nor a false alarm.

Y is the ground truth, Ŷ the parsed labels, n the completion's length in tokens and T the length
threshold (250 tokens in the paper). Two choices the paper leaves open:
- Jaccard(∅, ∅) = 1 (the sets agree); a valid completion with an empty solution against a
  non-empty truth scores 0 - λ_len·[n < T].
- λ_len defaults to 0.1, a tenth of a perfect answer: enough to tip GRPO's group-relative advantage
  towards longer reasoning between otherwise equal completions, never enough to outweigh a label.
"""

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rewards.parsing import ParserConfig, parse_completion
from rewards.protocol import ScoredItem
from shared.schemas import RewardItem

FORMULA_VERSION = "1"


class HardRewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    length_penalty: float = Field(0.1, ge=0.0, description="λ_len, subtracted when the completion is short")
    min_tokens: int = Field(250, ge=0, description="completions shorter than this many tokens are penalised")
    parser: ParserConfig = ParserConfig(mode="strict")


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

    def score_one(self, item: RewardItem) -> ScoredItem:
        parsed = parse_completion(item.text, self.config.parser)
        if not parsed.valid:
            return ScoredItem(0.0, {"jaccard": 0.0, "length_penalty": 0.0}, [])  # no labels credited
        masked = set(item.masked)
        overlap = jaccard(set(item.labels) - masked, set(parsed.labels) - masked)
        penalty = -self.config.length_penalty if item.n_tokens < self.config.min_tokens else 0.0
        return ScoredItem(overlap + penalty, {"jaccard": overlap, "length_penalty": penalty}, parsed.labels)

    def score(self, items: list[RewardItem], state: dict[str, Any] | None) -> tuple[list[ScoredItem], None]:
        del state  # the hard reward carries nothing between batches
        return [self.score_one(item) for item in items], None
