"""The `traces` subcommand's options and the errors a user sees before any request is sent."""

import argparse
import json

import pytest
from PIL import Image

from dataprep.traces import commands as trace_commands
from dataprep.traces.client import TeacherSettings
from dataprep.traces.generation import TraceRunConfig, generate_traces
from dataprep.traces.output import TraceRejection
from shared.errors import UserError
from shared.manifest import ManifestRecord, write_manifest
from tests.support import free_port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxr-rl")
    trace_commands.register(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


@pytest.fixture()
def manifest(tmp_path):
    records = [ManifestRecord(id=f"r{i}", image=f"r{i}.png", labels=["Edema"]) for i in range(3)]
    return write_manifest(records, tmp_path / "manifest.jsonl")


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["traces", "--help"])
    text = capsys.readouterr().out
    for option in [
        "--manifest",
        "--out",
        "--endpoint",
        "--model",
        "--api-key-env",
        "--format",
        "--concurrency",
        "--max-retries",
        "--timeout",
        "--temperature",
        "--max-tokens",
        "--max-image-side",
        "--reserve",
        "import",
    ]:
        assert option in text
    with pytest.raises(SystemExit):
        _parser().parse_args(["traces", "import", "--help"])
    text = capsys.readouterr().out
    for option in ["--traces", "--manifest", "--out", "--text-field", "--id-field", "--format"]:
        assert option in text


def test_import_subcommand_parses_its_own_options(tmp_path):
    args = _parser().parse_args(
        [
            "traces",
            "import",
            "--traces",
            "t.jsonl",
            "--manifest",
            "m.jsonl",
            "--out",
            "o.jsonl",
            "--text-field",
            "x",
        ]
    )
    assert args.run is trace_commands.run_import and args.text_field == "x" and args.id_field == "id"


def test_generation_names_missing_options(manifest, tmp_path):
    with pytest.raises(UserError, match="missing --endpoint, --model"):
        _run(["traces", "--manifest", str(manifest), "--out", str(tmp_path / "o.jsonl")])


def test_unset_api_key_variable_is_named(manifest, tmp_path, monkeypatch):
    monkeypatch.delenv("CXR_RL_TEST_NO_SUCH_KEY", raising=False)
    argv = [
        "traces",
        "--manifest",
        str(manifest),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--endpoint",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--api-key-env",
        "CXR_RL_TEST_NO_SUCH_KEY",
    ]
    with pytest.raises(
        UserError, match="--api-key-env CXR_RL_TEST_NO_SUCH_KEY: the environment variable is not set"
    ):
        _run(argv)


def _config(manifest, out, **changes) -> TraceRunConfig:
    teacher = TeacherSettings(endpoint=f"http://127.0.0.1:{free_port()}/v1", model="m", retry={"retries": 0})
    return TraceRunConfig(manifest=manifest, out=out, teacher=teacher, progress=False, **changes)


def test_unknown_format_lists_the_known_ones(manifest, tmp_path):
    with pytest.raises(UserError, match="unknown prompt format 'poetry'; known formats: .*free_reasoning"):
        generate_traces(_config(manifest, tmp_path / "o.jsonl", format="poetry"))


def test_unreachable_teacher_and_unreadable_images_fail_records_not_the_run(manifest, tmp_path):
    for name in ("r0.png", "r1.png"):
        Image.new("L", (32, 32), 90).save(tmp_path / name)
    formats = tmp_path / "formats.yaml"
    formats.write_text("terse: Answer in one line.\n")
    out = tmp_path / "o.jsonl"
    summary = generate_traces(_config(manifest, out, format="terse", formats_file=formats))
    assert summary.failed == {"connection error after 1 attempt": 2, "unreadable image": 1}  # nothing listens
    assert not out.exists()
    rejections = [TraceRejection.model_validate_json(line) for line in (tmp_path / "o.rejects.jsonl").open()]
    assert {(r.id, r.reason) for r in rejections} == {
        ("r0", "connection error after 1 attempt"),
        ("r1", "connection error after 1 attempt"),
        ("r2", "unreadable image"),
    }
    assert "r2.png" in next(r.detail for r in rejections if r.id == "r2")


def test_output_from_another_manifest_is_refused(manifest, tmp_path):
    out = tmp_path / "o.jsonl"
    stranger = ManifestRecord(id="elsewhere", image="x.png", labels=["Edema"], target="<think>a</think>")
    out.write_text(stranger.model_dump_json() + "\n")
    with pytest.raises(
        UserError, match="1 record\\(s\\) that are not in .*manifest.jsonl \\(first: 'elsewhere'\\)"
    ):
        generate_traces(_config(manifest, out))
    assert json.loads(out.read_text())["id"] == "elsewhere"


def test_duplicate_manifest_ids_are_refused(tmp_path):
    records = [ManifestRecord(id="same", image="a.png", labels=["Edema"])] * 2
    manifest = write_manifest(records, tmp_path / "m.jsonl")
    with pytest.raises(UserError, match="record id 'same' appears more than once"):
        generate_traces(_config(manifest, tmp_path / "o.jsonl"))


def test_output_must_not_be_the_manifest(manifest):
    with pytest.raises(UserError, match="three different files"):
        generate_traces(_config(manifest, manifest))
