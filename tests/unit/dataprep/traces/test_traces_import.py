"""`cxr-rl traces import`: an existing trace file with good and bad lines becomes an SFT manifest
of the good ones, and a rejects file that says why each bad line was turned away."""

import json
from pathlib import Path

import pytest

from dataprep.traces.importing import import_traces
from dataprep.traces.output import TraceRejection
from rewards.parsing import parse_completion
from shared.errors import UserError
from shared.manifest import ManifestRecord, read_manifest, write_manifest

LABELS = {
    "p1": ["Cardiomegaly"],
    "p2": ["Edema", "Pleural Effusion"],
    "p3": ["No Finding"],
    "p4": ["Pneumothorax"],
    "p5": ["Atelectasis"],
}


def _trace(labels: list[str]) -> str:
    return f"<think>Reading the film, the evidence supports {', '.join(labels)}.</think>\n<solution>{', '.join(labels)}</solution>"


@pytest.fixture()
def manifest(tmp_path) -> Path:
    records = [
        ManifestRecord(
            id=i, image=f"images/{i}.png", labels=labels, source="phantom", metadata={"view": "PA"}
        )
        for i, labels in LABELS.items()
    ]
    return write_manifest(records, tmp_path / "data" / "manifest.jsonl")


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_import_keeps_good_traces_and_rejects_bad_lines(tmp_path, manifest):
    lines = [
        json.dumps({"id": "p2", "text": _trace(LABELS["p2"])}),
        json.dumps(
            {"id": "p1", "text": "<think>Big heart.</think><solution>Edema</solution>"}
        ),  # wrong labels
        "{this is not json",
        json.dumps({"id": "p3"}),  # no text
        json.dumps({"id": "nobody", "text": _trace(["Edema"])}),
        json.dumps({"id": "p4", "text": "Pneumothorax"}),  # no tags
        "",
        json.dumps({"id": "p1", "text": _trace(LABELS["p1"])}),  # a later, good trace for p1
        json.dumps({"id": "p1", "text": _trace(LABELS["p1"]) + " "}),  # p1 already has one
        json.dumps(["p5", "a list"]),
    ]
    traces = _write_lines(tmp_path / "teacher.jsonl", lines)
    out = tmp_path / "sft" / "sft.jsonl"
    summary = import_traces(traces, manifest, out, progress=False)

    written = read_manifest(out)
    assert [record.id for record in written] == ["p1", "p2"]  # manifest order
    for record in written:
        assert parse_completion(record.target).labels == LABELS[record.id]
        assert (out.parent / record.image).resolve() == (
            manifest.parent / "images" / f"{record.id}.png"
        ).resolve()
        assert record.metadata == {"view": "PA", "trace_source": "teacher.jsonl"}
    assert (summary.written, summary.missing) == (2, 3)
    assert summary.rejected == {
        "wrong labels": 1,
        "unreadable line": 3,
        "unknown id": 1,
        "invalid format": 1,
        "duplicate id": 1,
    }

    rejections = [
        TraceRejection.model_validate_json(line) for line in (tmp_path / "sft" / "sft.rejects.jsonl").open()
    ]
    by_line = {rejection.line: rejection for rejection in rejections}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 9, 10]
    assert by_line[2].reason == "wrong labels" and by_line[2].text.startswith("<think>Big heart")
    assert "not valid JSON" in by_line[3].detail
    assert "no 'text' field" in by_line[4].detail
    assert by_line[5].id == "nobody"


def test_import_reads_other_field_names(tmp_path, manifest):
    traces = _write_lines(tmp_path / "t.jsonl", [json.dumps({"uid": 5, "completion": _trace(LABELS["p5"])})])
    manifest_5 = write_manifest(
        [ManifestRecord(id="5", image="a.png", labels=["Atelectasis"])], tmp_path / "five.jsonl"
    )
    summary = import_traces(
        traces, manifest_5, tmp_path / "o.jsonl", text_field="completion", id_field="uid", progress=False
    )
    assert summary.written == 1 and summary.rejected.total() == 0
    assert (tmp_path / "o.rejects.jsonl").read_text() == ""


def test_import_with_the_wrong_text_field_says_so(tmp_path, manifest):
    traces = _write_lines(
        tmp_path / "t.jsonl", [json.dumps({"id": "p1", "completion": _trace(["Cardiomegaly"])})]
    )
    with pytest.raises(
        UserError, match="no line has a 'text' field; name the trace text's field with --text-field"
    ):
        import_traces(traces, manifest, tmp_path / "o.jsonl", progress=False)
    assert not (tmp_path / "o.jsonl").exists()


def test_import_refuses_to_overwrite_its_inputs(tmp_path, manifest):
    traces = _write_lines(tmp_path / "t.jsonl", [json.dumps({"id": "p1", "text": _trace(["Cardiomegaly"])})])
    before = manifest.read_text()
    with pytest.raises(UserError, match="three different files"):
        import_traces(traces, manifest, manifest, progress=False)
    with pytest.raises(UserError, match="must not be the output"):
        import_traces(traces, manifest, traces, progress=False)
    assert manifest.read_text() == before


def test_import_names_a_missing_trace_file(tmp_path, manifest):
    with pytest.raises(UserError, match="trace file not found: .*missing.jsonl"):
        import_traces(tmp_path / "missing.jsonl", manifest, tmp_path / "o.jsonl", progress=False)
