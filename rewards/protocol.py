"""What a reward function is, and how a batch request becomes a checked `RewardResult`.

A reward function is a plain object with `name`, `version` and
`score(items, state) -> (scored_items, new_state)`, and optionally a `scale` (default 1): the factor
the trainer multiplies its totals by before taking group advantages, reported with every result so
that rewards of different ranges give advantages of one order under Dr. GRPO (no std scaling).
It keeps no state of its own: whatever must
outlive a batch (the nuanced reward's window of recent predictions) goes in and out as `state`,
which the caller carries and checkpoints with training. Scoring the same batch from the same state
therefore gives the same numbers, so a retried batch (after a worker died) is scored once.
"""

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from rewards.parsing import ParserConfig, parse_completion
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS
from shared.schemas import LabelCounts, RewardItem, RewardRequest, RewardResult


class RewardError(UserError):
    """A reward that cannot be loaded, raised, or returned something unusable (NaN, wrong count)."""


@dataclass(frozen=True, slots=True)
class ScoredItem:
    """One completion's reward: `total` and the components it is made of (they sum to it).

    `predicted_labels` are the labels the reward credited (none for a completion it rejects); they
    feed the per-label tp/fp/fn counts. None lets the caller read them with the strict parser (a
    plugin need not parse).
    """

    total: float
    components: dict[str, float] = field(default_factory=dict)
    predicted_labels: list[str] | None = None


@runtime_checkable
class RewardFunction(Protocol):
    name: str
    version: str

    def score(
        self, items: list[RewardItem], state: dict[str, Any] | None
    ) -> tuple[list[ScoredItem], dict[str, Any] | None]: ...


def label_counts(
    predicted: list[list[str]], truths: list[list[str]], masks: list[list[str]] | None = None
) -> dict[str, LabelCounts]:
    """Per-label true positives, false positives and false negatives over a batch (all 14 labels);
    a label masked for an item (`drop` policy) counts nowhere for that item."""
    counts = {label: [0, 0, 0] for label in CHEXPERT_LABELS}
    masks = masks or [[] for _ in truths]
    for labels, truth, masked in zip(predicted, truths, masks, strict=True):
        predicted_set, truth_set = set(labels), set(truth)
        for label in predicted_set | truth_set:
            if label not in counts or label in masked:
                continue
            index = 0 if label in predicted_set and label in truth_set else 1 if label in predicted_set else 2
            counts[label][index] += 1
    return {label: LabelCounts(tp=tp, fp=fp, fn=fn) for label, (tp, fp, fn) in counts.items()}


def check_result(result: RewardResult, request: RewardRequest) -> RewardResult:
    """Raise `RewardError` unless the result answers this request: same batch, one finite total and
    one components dict (of finite numbers) per item."""
    where = f"reward {result.reward_name!r} on batch {request.batch_id!r}"
    if result.batch_id != request.batch_id:
        raise RewardError(f"{where}: result is for batch {result.batch_id!r}")
    expected = len(request.items)
    if len(result.totals) != expected or len(result.components) != expected:
        raise RewardError(
            f"{where}: returned {len(result.totals)} totals and {len(result.components)} component sets "
            f"for {expected} items"
        )
    for index, (total, components) in enumerate(zip(result.totals, result.components, strict=True)):
        bad = {key: value for key, value in components.items() if not _finite(value)}
        if not _finite(total) or bad:
            raise RewardError(
                f"{where}: item {index} has a non-finite reward (total={total}, components={bad})"
            )
    return result


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def reward_scale(reward: RewardFunction) -> float:
    """The reward's declared scale (1 when it declares none); a clear error unless a finite number > 0."""
    scale = getattr(reward, "scale", 1.0)
    if not _finite(scale) or scale <= 0:
        raise RewardError(f"reward {reward.name!r} declares scale={scale!r}; it must be a finite number > 0")
    return float(scale)


def score_request(reward: RewardFunction, request: RewardRequest) -> RewardResult:
    """Score one batch with its carried state; any failure of the reward is a `RewardError`."""
    try:
        scored, state = reward.score(list(request.items), request.state)
    except RewardError:
        raise
    except Exception as error:  # a plugin's bug must reach the trainer as one clear error
        raise RewardError(
            f"reward {reward.name!r} failed on batch {request.batch_id!r}: {error!r}"
        ) from error
    if not isinstance(scored, list) or not all(isinstance(item, ScoredItem) for item in scored):
        raise RewardError(
            f"reward {reward.name!r} must return a list of ScoredItem, got {type(scored).__name__}"
        )
    if state is not None and not isinstance(state, dict):
        raise RewardError(
            f"reward {reward.name!r} returned a state of type {type(state).__name__}, not a dict"
        )
    scale = reward_scale(reward)
    if len(scored) == len(request.items):
        predicted = [
            item.predicted_labels
            if item.predicted_labels is not None
            else parse_completion(source.text, STRICT_PARSER).labels
            for item, source in zip(scored, request.items, strict=True)
        ]
        counts = label_counts(
            predicted, [item.labels for item in request.items], [item.masked for item in request.items]
        )
    else:
        counts = {}
    try:
        result = RewardResult(
            batch_id=request.batch_id,
            reward_name=str(reward.name),
            reward_version=str(reward.version),
            scale=scale,
            totals=[item.total for item in scored],
            components=[dict(item.components) for item in scored],
            label_counts=counts,
            state=state,
        )
    except ValidationError as error:
        raise RewardError(f"reward {reward.name!r} returned an unusable result: {error}") from None
    return check_result(result, request)


STRICT_PARSER = ParserConfig(mode="strict")
