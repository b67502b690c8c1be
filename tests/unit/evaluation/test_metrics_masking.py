"""The `drop` uncertainty policy masks labels out of scoring, and a failed parse scores nothing.

- A masked label (a -1 under `drop`) counts in no label's support, TP, FP or FN, in no example's
  Jaccard or exact match, and in no reward's Jaccard or label counts: checked on real CheXpert rows
  (torchxrayvision's copy of CheXpert's train.csv) loaded with `--uncertain drop`.
- An answer that failed to parse scores 0 on Jaccard and exact match whatever the truth, also on an
  image with no positive label (where "no label predicted" would otherwise look like a match).
"""

import json

import pytest

from dataprep.chexpert import load_chexpert
from dataprep.loading import LoadOptions
from evaluation.metrics import score_predictions
from evaluation.records import ScoredPrediction
from rewards.hard import HardReward
from rewards.protocol import score_request
from shared.schemas import RewardItem, RewardRequest
from tests.unit.dataprep.test_loaders_real_rows import (
    head_rows,
    place_images,
    torchxrayvision_file,
    write_csv,
)
from tests.unit.evaluation.test_score_cli import run_cli

ROWS = 400


@pytest.fixture(scope="module")
def dropped_records(tmp_path_factory):
    """Frontal CheXpert rows loaded with `drop`: every -1 becomes a masked label."""
    root = tmp_path_factory.mktemp("chexpert")
    header, rows = head_rows(torchxrayvision_file("chexpert_train.csv.gz"), ROWS)
    write_csv(root / "train.csv", header, rows)
    path_column = header.index("Path")
    place_images([root.parent / row[path_column] for row in rows])
    records = load_chexpert(root, LoadOptions(uncertain="drop", progress=False)).records
    masked = [record for record in records if record.metadata.get("masked")]
    assert len(masked) > 50, "the real rows should hold plenty of uncertain labels"
    return records


def _predictions(records, predict_masked: bool, with_masks: bool) -> list[ScoredPrediction]:
    """Each image's prediction is its truth plus, when asked, every label the policy masked."""
    out = []
    for record in records:
        masked = record.metadata.get("masked", [])
        pred = record.labels + (masked if predict_masked else [])
        out.append(
            ScoredPrediction(truth=record.labels, pred=pred, valid=True, masked=masked if with_masks else [])
        )
    return out


def test_a_masked_label_changes_no_count(dropped_records):
    silent = score_predictions(_predictions(dropped_records, False, with_masks=True), "chexpert14")
    naming = score_predictions(_predictions(dropped_records, True, with_masks=True), "chexpert14")
    assert naming == silent  # predicting a masked label is neither a hit nor a false alarm
    assert naming.macro_f1 == naming.micro_f1 == naming.exact_match == naming.jaccard == 1.0
    # Without the masks the same answers are charged a false positive for every masked label.
    unmasked = score_predictions(_predictions(dropped_records, True, with_masks=False), "chexpert14")
    assert unmasked.exact_match < 1.0 and unmasked.micro_precision < 1.0


def test_a_masked_label_is_in_no_support(dropped_records):
    # Truth that (wrongly) holds the masked label too: the mask must still keep it out of support.
    predictions = [
        ScoredPrediction(
            truth=record.labels + record.metadata.get("masked", []),
            pred=record.labels,
            valid=True,
            masked=record.metadata.get("masked", []),
        )
        for record in dropped_records
    ]
    scores = score_predictions(predictions, "chexpert14")
    positives = {label: 0 for label in scores.labels}
    for record in dropped_records:
        for label in record.labels:
            positives[label] += 1
    assert {label: score.support for label, score in scores.per_label.items()} == positives
    assert scores.micro_recall == 1.0


@pytest.mark.parametrize("truth", [[], ["No Finding"], ["Edema", "Cardiomegaly"]])
def test_a_failed_parse_scores_zero_jaccard_and_exact_match(truth):
    scores = score_predictions([ScoredPrediction(truth=truth, pred=[], valid=False)], "chexpert14")
    assert (scores.jaccard, scores.exact_match, scores.fail_rate) == (0.0, 0.0, 1.0)


def test_score_command_gives_a_failed_parse_on_a_clear_image_zero(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps({"truth": [], "pred": [], "valid": False}) + "\n")
    result = run_cli("score", "--predictions", str(path), "--labels", "chexpert14")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["jaccard"], summary["exact_match"]) == (0.0, 0.0)


def test_reward_jaccard_and_label_counts_leave_masked_labels_out(dropped_records):
    record = next(r for r in dropped_records if r.labels and r.metadata.get("masked"))
    masked = record.metadata["masked"]
    text = f"<think></think>\n<solution>{', '.join(record.labels + masked)}</solution>"
    item = RewardItem(text=text, n_tokens=300, labels=record.labels, masked=masked)
    result = score_request(HardReward(), RewardRequest(batch_id="b", items=[item]))
    assert result.totals == [1.0]  # the masked labels named in the answer are not false positives
    for label in masked:
        assert result.label_counts[label].model_dump() == {"tp": 0, "fp": 0, "fn": 0}
    unmasked = RewardItem(text=text, n_tokens=300, labels=record.labels)
    assert HardReward().score_one(unmasked).total < 1.0
