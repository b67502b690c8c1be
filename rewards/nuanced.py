"""The paper's nuanced reward: graded credit, frequency-weighted false positives, format penalties
and a mode-collapse guard. Each component is reported; the total is their sum.

For truth Y and parsed labels Ŷ (strict parser), with c = |Y ∩ Ŷ|:

    exact_match        +100                      if Ŷ = Y
    partial_recall     +30 · c / |Y|             if Ŷ ≠ Y (0 when Y is empty)
    partial_precision  +20 · c / |Ŷ|             if Ŷ ≠ Y (0 when Ŷ is empty)
    false_positives    -Σ_{l ∈ Ŷ \\ Y} (5 + 15 · f(l) / max f)
    invalid_labels     -100 per entry that names no label (hedged entries count: the contract
                       asks for labels, not possibilities)
    duplicates         -25 per repeated mention of a label
    extraneous_text    -10 when anything but whitespace lies outside the two blocks
    repetition         -30 per excess repetition of a dominant label the answer holds (below)
    collapse           -50 when the answer holds a dominant label
    floor              lifts a valid answer's total to -200 when it would be lower
    format             -(100 + 200 + 50) = -350 when the answer did not parse (rewards.parsing:
                       blocks missing / repeated / nested, text outside them, or no label named)

Readings of the paper made here, all configurable:
- Partial credit is given only when the match is not exact, so an exact match earns 100, not 150.
- A malformed answer scores below every valid answer to the same X-ray. Valid totals are kept at
  or above `valid_floor` (-200); a malformed answer pays the best credit any answer can earn
  (100), the distance to the floor (200) and `format_penalty` (50), so it scores at most -250.
  A format penalty of -50 let an answer with the right labels and no <think> block score 50, above
  a valid partial answer's 35: GRPO would then learn to drop the reasoning. A malformed answer
  keeps its other terms, so malformed answers are still ranked among themselves.
- The false-positive weight grows linearly with the label's prevalence f(l); the default shares
  are CheXpert's (rewards.label_frequencies): a wrong "Support Devices" (56% of frontal images)
  costs 20, a wrong "Pleural Other" (1.3%) about 5.4. A floor of 5 keeps rare false positives from
  being free, which would invite padding answers with rare labels.
- The collapse guard, in the paper's words: "cumulative penalties (−30 per excess repetition, −50
  for mode collapse) when any single label exceeds 70% dominance", in a window of the last 100
  predictions. The window holds the label sets of the last `window_size` completions a label
  could be read from (valid or not), in scoring order, each item's own included once scored. A
  label dominates when more than ⌊0.7·100⌋ = 70 of them hold it; each one beyond the 70th is one
  *excess repetition*. An answer holding a dominant label pays -30 per excess repetition of each
  dominant label it holds (71 of 100: -30; 80 of 100: -300) and -50 once for the collapse, so the
  penalty grows with the collapse. Before the window is full its empty slots hold no label: the
  guard can act from the 71st prediction on, and cannot fire by chance on a handful of answers.
  An answer without the dominant label is what the guard wants and is not penalised; a penalty
  on every member of a GRPO group would cancel in the group's advantages anyway.
- The guard penalises correct answers too: in a collapsed policy the correct answers are the
  chance hits of a constant guess, and GRPO needs them ranked below the diverse ones.
- `scale` (default 1/100, one exact match) is what the trainer multiplies the reward by before
  taking group advantages: it puts the nuanced reward's advantages on the hard reward's order
  (`python -m rewards.advantage_scale`).
"""

import math
from collections import Counter, deque
from typing import Any, ClassVar

from pydantic import Field, field_validator

from rewards.hard import config_version
from rewards.label_frequencies import CHEXPERT_LABEL_FREQUENCIES
from rewards.parsing import ParserConfig, ParseResult, parse_completion
from rewards.protocol import RewardError, ScoredItem
from shared.config import StrictModel
from shared.labels import CHEXPERT_LABELS
from shared.schemas import RewardItem

FORMULA_VERSION = "2"
STATE_FORMAT = 1


class NuancedRewardConfig(StrictModel, frozen=True):
    removed_options: ClassVar[dict[str, str]] = {
        "collapse_min_predictions": "collapse_min_predictions is gone: the guard counts a window's empty slots "
        "as holding no label, so it needs no warm-up (see rewards/nuanced.py)"
    }

    exact_match: float = Field(100.0, gt=0.0, description="when the labels equal the truth exactly")
    recall_credit: float = Field(30.0, ge=0.0, description="times the share of true labels named (not exact)")
    precision_credit: float = Field(
        20.0, ge=0.0, description="times the share of named labels true (not exact)"
    )
    false_positive_floor: float = Field(5.0, ge=0.0, description="the least a wrong label costs")
    false_positive_scale: float = Field(
        15.0, ge=0.0, description="a wrong label's extra cost, times its frequency over the top frequency"
    )
    label_frequencies: dict[str, float] = Field(
        default_factory=lambda: dict(CHEXPERT_LABEL_FREQUENCIES),
        description="share of training images with each label (`cxr-rl reward frequencies`)",
    )
    invalid_label_penalty: float = Field(100.0, ge=0.0, description="per entry that names no label")
    duplicate_penalty: float = Field(25.0, ge=0.0, description="per repeated mention of a label")
    extraneous_text_penalty: float = Field(10.0, ge=0.0, description="when text lies outside the two blocks")
    valid_floor: float = Field(-200.0, le=0.0, description="the lowest total a valid answer gets")
    format_penalty: float = Field(
        50.0, gt=0.0, description="how far the best malformed answer stays below `valid_floor`"
    )
    window_size: int = Field(100, ge=1, description="the collapse guard's window of recent predictions")
    collapse_threshold: float = Field(
        0.7, gt=0.0, lt=1.0, description="a label held by more than this share of the window dominates"
    )
    repetition_penalty: float = Field(30.0, ge=0.0, description="per excess repetition")
    collapse_penalty: float = Field(50.0, ge=0.0, description="once, when the answer holds a dominant label")
    scale: float = Field(
        0.01, gt=0.0, allow_inf_nan=False, description="the trainer multiplies the reward by this"
    )
    parser: ParserConfig = Field(ParserConfig(mode="strict"), description="how completions are read")

    @field_validator("label_frequencies")
    @classmethod
    def _all_labels(cls, frequencies: dict[str, float]) -> dict[str, float]:
        missing = [label for label in CHEXPERT_LABELS if label not in frequencies]
        unknown = sorted(set(frequencies) - set(CHEXPERT_LABELS))
        if missing or unknown:
            raise ValueError(
                f"give a frequency for each CheXpert label; missing {missing}, unknown {unknown}"
            )
        bad = {label: value for label, value in frequencies.items() if not 0.0 < value <= 1.0}
        if bad:
            raise ValueError(f"frequencies must lie in (0, 1]: {bad}")
        return frequencies

    @property
    def repetition_allowance(self) -> int:
        """How many predictions of the window may hold one label before it dominates: ⌊0.7·100⌋."""
        return math.floor(round(self.collapse_threshold * self.window_size, 9))

    @property
    def malformed_format_penalty(self) -> float:
        best_credit = max(self.exact_match, self.recall_credit + self.precision_credit)
        return best_credit - self.valid_floor + self.format_penalty


def _penalty(amount: float, count: int | bool) -> float:
    return -amount * int(count) if count else 0.0


def _answer_key(labels: list[str]) -> str:
    return "|".join(labels)


class NuancedReward:
    name = "nuanced"

    def __init__(self, config: NuancedRewardConfig | dict[str, Any] | None = None):
        self.config = NuancedRewardConfig.model_validate(config or {})
        self.version = config_version(FORMULA_VERSION, self.config)
        self.scale = self.config.scale
        top = max(self.config.label_frequencies.values())
        self.false_positive_cost = {
            label: self.config.false_positive_floor + self.config.false_positive_scale * frequency / top
            for label, frequency in self.config.label_frequencies.items()
        }

    def initial_state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "window": []}

    def _window_from(self, state: dict[str, Any] | None) -> deque[str]:
        if state is None:
            state = self.initial_state()
        window = state.get("window") if isinstance(state, dict) else None
        if not isinstance(window, list) or state.get("format") != STATE_FORMAT:
            raise RewardError(
                f"nuanced reward: state is not a format-{STATE_FORMAT} window: {str(state)[:200]}"
            )
        for entry in window:
            if not isinstance(entry, str) or any(label not in CHEXPERT_LABELS for label in entry.split("|")):
                raise RewardError(f"nuanced reward: state window holds {entry!r}, not a '|'-joined label set")
        return deque(window, maxlen=self.config.window_size)

    def label_terms(self, truth: set[str], parsed: ParseResult) -> dict[str, float]:
        c = self.config
        predicted = set(parsed.labels)
        correct = len(truth & predicted)
        exact = bool(predicted) and predicted == truth
        return {
            "exact_match": c.exact_match if exact else 0.0,
            "partial_recall": 0.0 if exact or not truth else c.recall_credit * correct / len(truth),
            "partial_precision": 0.0
            if exact or not predicted
            else c.precision_credit * correct / len(predicted),
            "false_positives": -sum(self.false_positive_cost[label] for label in predicted - truth) + 0.0,
            "invalid_labels": _penalty(c.invalid_label_penalty, len(parsed.invalid)),
            "duplicates": _penalty(c.duplicate_penalty, len(parsed.duplicates)),
            "extraneous_text": _penalty(c.extraneous_text_penalty, bool(parsed.extraneous)),
        }

    def guard_terms(self, labels: list[str], window: deque[str]) -> dict[str, float]:
        """Push this prediction into the window, then charge it for each dominant label it holds."""
        if not labels:
            return {"repetition": 0.0, "collapse": 0.0}
        window.append(_answer_key(labels))
        c = self.config
        allowance = c.repetition_allowance
        holding = Counter(label for key in window for label in key.split("|"))
        excess = sum(holding[label] - allowance for label in labels if holding[label] > allowance)
        return {
            "repetition": _penalty(c.repetition_penalty, excess),
            "collapse": _penalty(c.collapse_penalty, excess > 0),
        }

    def score_one(self, item: RewardItem, window: deque[str]) -> ScoredItem:
        parsed = parse_completion(item.text, self.config.parser)
        components = self.label_terms(set(item.labels), parsed) | self.guard_terms(parsed.labels, window)
        earned = sum(components.values())
        if parsed.valid:
            components["format"] = 0.0
            components["floor"] = max(0.0, self.config.valid_floor - earned)
        else:
            components["format"] = -self.config.malformed_format_penalty
            components["floor"] = 0.0
        return ScoredItem(sum(components.values()), components, parsed.labels)

    def score(
        self, items: list[RewardItem], state: dict[str, Any] | None
    ) -> tuple[list[ScoredItem], dict[str, Any]]:
        window = self._window_from(state)
        scored = [self.score_one(item, window) for item in items]
        return scored, {"format": STATE_FORMAT, "window": list(window)}
