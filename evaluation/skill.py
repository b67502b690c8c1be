"""How much a checkpoint reads the image: its macro-F1 minus the best shortcut baseline's on the
same images (every label seen in training, labels drawn at their training rates, its own answer on
a blank image), with a paired bootstrap interval, and how many different answers it gave. A model
that answers every image alike has one answer set and no skill, whatever its F1."""

from collections.abc import Sequence

from pydantic import BaseModel

from evaluation.baselines import DatasetBaselines, prevalence_sampled_predictions
from evaluation.bootstrap import paired_bootstrap
from evaluation.metrics import label_matrices
from evaluation.records import PredictionRecord, ScoredPrediction


class SkillOverShortcut(BaseModel):
    best_shortcut: str  # which shortcut scored best
    shortcut_macro_f1: float
    macro_f1: float
    skill: float  # macro_f1 - shortcut_macro_f1
    ci: list[float]  # [low, high] of `skill`, paired bootstrap on the same images
    distinct_answer_sets: int  # different label sets among the parsed answers


def shortcut_answers(
    truths: Sequence[list[str]], baselines: DatasetBaselines, checkpoint: str
) -> dict[str, list[ScoredPrediction]]:
    """Each shortcut's answer per image, in the images' order."""
    answers: dict[str, list[ScoredPrediction]] = {}
    for baseline in baselines.prevalence:
        if baseline.mode == "threshold":
            preds = [list(baseline.predicted_labels or []) for _ in truths]
            name = f"training prevalence above {baseline.threshold:g}"
        else:
            preds = prevalence_sampled_predictions(baseline.prevalence, len(truths), baseline.seed or 0)
            name = "labels drawn at their training rates"
        answers[name] = [
            ScoredPrediction(truth=t, pred=p, valid=True) for t, p in zip(truths, preds, strict=True)
        ]
    blank = baselines.blank_images.get(checkpoint)
    if blank is not None and blank.answer is not None:
        answers["its answer on a blank image"] = [
            ScoredPrediction(truth=t, pred=blank.answer.pred, valid=blank.answer.valid) for t in truths
        ]
    return answers


def skill_over_shortcut(
    records: Sequence[PredictionRecord],
    label_set: str,
    baselines: DatasetBaselines,
    checkpoint: str,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> SkillOverShortcut:
    """`records`: the checkpoint's answers on a dataset, in the dataset's order (the order the
    baselines' truths are in)."""
    masks = [record.masked for record in records]
    truths = [record.truth for record in records]
    candidate = label_matrices(records, label_set)
    best_name, best = None, None
    for name, answers in shortcut_answers(truths, baselines, checkpoint).items():
        answers = [a.model_copy(update={"masked": m}) for a, m in zip(answers, masks, strict=True)]
        difference = paired_bootstrap(
            label_matrices(answers, label_set), candidate, "macro_f1", n_resamples, seed, level
        )
        if best is None or difference.baseline > best.baseline:
            best_name, best = name, difference
    distinct = {tuple(record.pred) for record in records if record.valid}
    return SkillOverShortcut(
        best_shortcut=best_name,
        shortcut_macro_f1=best.baseline,
        macro_f1=best.candidate,
        skill=best.absolute.estimate,
        ci=[best.absolute.low, best.absolute.high],
        distinct_answer_sets=len(distinct),
    )
