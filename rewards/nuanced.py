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
    format             -50 when the think or solution block is missing / repeated / nested, or
                       no label could be read
    repetition         -30 per label of Ŷ that fills more than 70% of the window
    collapse           -50 when Ŷ itself (the whole answer) fills more than 70% of the window

Choices where the paper is ambiguous, made here and configurable:
- Partial credit is given only when the match is not exact, so an exact match earns 100, not 150.
- The false-positive weight grows linearly with the label's prevalence f(l): a wrong "No Finding"
  (the most frequent MIMIC label) costs 20, a wrong "Pleural Other" about 5.4. A floor of 5 keeps
  rare false positives from being free, which would invite padding answers with rare labels.
- The window holds the last 100 *parseable* predictions (label sets) in scoring order, each item's
  own prediction included once it is scored; completions without labels are not predictions.
  The guard only acts once the window holds `collapse_min_predictions` (default: full, 100), so
  the first batches of training, with few samples, are not penalised for agreeing by chance.
- "Excess repetition" is read per item: an item whose answer repeats a label that already fills
  more than 70% of the window is one excess repetition of that label (-30 for each such label);
  "collapse" is the whole answer being the same as more than 70% of the window (-50). No real
  label is that common (Support Devices, the most prevalent in CheXpert, is about 52%), so
  crossing 70% means the policy has stopped looking at the image.
- The guard penalises correct answers too: in a collapsed policy the correct answers are the
  chance hits of a constant guess, and GRPO needs them ranked below the diverse ones.
"""

from collections import Counter, deque
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rewards.hard import config_version
from rewards.parsing import ParserConfig, ParseResult, parse_completion
from rewards.protocol import RewardError, ScoredItem
from shared.labels import CHEXPERT_LABELS
from shared.schemas import RewardItem

FORMULA_VERSION = "1"
STATE_FORMAT = 1

# Approximate share of MIMIC-CXR-JPG v2 studies with each CheXpert label positive (CheXpert
# labeler, rounded). Replace with your own training split's shares (`label_frequencies` below).
MIMIC_LABEL_FREQUENCIES: dict[str, float] = {
    "No Finding": 0.33,
    "Enlarged Cardiomediastinum": 0.031,
    "Cardiomegaly": 0.197,
    "Lung Opacity": 0.226,
    "Lung Lesion": 0.028,
    "Edema": 0.119,
    "Consolidation": 0.047,
    "Pneumonia": 0.073,
    "Atelectasis": 0.201,
    "Pneumothorax": 0.045,
    "Pleural Effusion": 0.238,
    "Pleural Other": 0.009,
    "Fracture": 0.019,
    "Support Devices": 0.292,
}


def label_frequencies(label_sets: list[list[str]]) -> dict[str, float]:
    """Share of samples carrying each CheXpert label, for `NuancedRewardConfig.label_frequencies`."""
    if not label_sets:
        raise ValueError("need at least one sample to count label frequencies")
    counts = Counter(label for labels in label_sets for label in set(labels))
    # A label absent from the sample gets half a count so that its weight stays defined and small.
    return {label: max(counts[label], 0.5) / len(label_sets) for label in CHEXPERT_LABELS}


class NuancedRewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exact_match: float = 100.0
    recall_credit: float = 30.0
    precision_credit: float = 20.0
    false_positive_floor: float = Field(5.0, ge=0.0)
    false_positive_scale: float = Field(15.0, ge=0.0)
    label_frequencies: dict[str, float] = Field(default_factory=lambda: dict(MIMIC_LABEL_FREQUENCIES))
    invalid_label_penalty: float = Field(100.0, ge=0.0)
    duplicate_penalty: float = Field(25.0, ge=0.0)
    extraneous_text_penalty: float = Field(10.0, ge=0.0)
    format_penalty: float = Field(50.0, ge=0.0)
    window_size: int = Field(100, ge=1)
    collapse_threshold: float = Field(0.7, gt=0.0, lt=1.0)
    collapse_min_predictions: int = Field(100, ge=1)
    repetition_penalty: float = Field(30.0, ge=0.0)
    collapse_penalty: float = Field(50.0, ge=0.0)
    parser: ParserConfig = ParserConfig(mode="strict")

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

    @model_validator(mode="after")
    def _window(self) -> "NuancedRewardConfig":
        if self.collapse_min_predictions > self.window_size:
            raise ValueError("collapse_min_predictions cannot exceed window_size")
        return self


def _penalty(amount: float, count: int | bool) -> float:
    return -amount * int(count) if count else 0.0


def _answer_key(labels: list[str]) -> str:
    return "|".join(labels)


class NuancedReward:
    name = "nuanced"

    def __init__(self, config: NuancedRewardConfig | dict[str, Any] | None = None):
        self.config = NuancedRewardConfig.model_validate(config or {})
        self.version = config_version(FORMULA_VERSION, self.config)
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
            "format": _penalty(
                c.format_penalty, parsed.think is None or parsed.solution is None or not predicted
            ),
        }

    def guard_terms(self, labels: list[str], window: deque[str]) -> dict[str, float]:
        """Push this prediction into the window, then penalise it if the window has collapsed."""
        if labels:
            window.append(_answer_key(labels))
        c = self.config
        if not labels or len(window) < c.collapse_min_predictions:
            return {"repetition": 0.0, "collapse": 0.0}
        limit = c.collapse_threshold * len(window)
        label_counts = Counter(label for key in window for label in key.split("|"))
        dominant = sum(1 for label in labels if label_counts[label] > limit)
        collapsed = Counter(window)[_answer_key(labels)] > limit
        return {
            "repetition": _penalty(c.repetition_penalty, dominant),
            "collapse": _penalty(c.collapse_penalty, collapsed),
        }

    def score(
        self, items: list[RewardItem], state: dict[str, Any] | None
    ) -> tuple[list[ScoredItem], dict[str, Any]]:
        window = self._window_from(state)
        scored = []
        for item in items:
            parsed = parse_completion(item.text, self.config.parser)
            components = self.label_terms(set(item.labels), parsed) | self.guard_terms(parsed.labels, window)
            scored.append(ScoredItem(sum(components.values()), components, parsed.labels))
        return scored, {"format": STATE_FORMAT, "window": list(window)}
