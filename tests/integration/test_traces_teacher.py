"""Trace generation against a local OpenAI-compatible stand-in teacher: a FastAPI app served by
uvicorn on 127.0.0.1 that answers from a script (good traces, wrong labels, 429s, 500s, a record
that always fails), and a run killed midway that a rerun finishes without redoing or losing work."""

import asyncio
import base64
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from dataprep.traces.client import TeacherSettings
from dataprep.traces.generation import TraceRunConfig, generate_traces
from dataprep.traces.output import TraceRejection
from rewards.parsing import parse_completion
from shared.manifest import ManifestRecord, read_manifest, write_manifest
from tests.support import free_port

pytestmark = pytest.mark.integration

OVERLAP_WAIT_S = 60  # a hang guard for a client that never sends two at once; never waited out otherwise
_LABELS_LINE = re.compile(r"ground-truth labels of this chest X-ray are: (?P<labels>[^\n]+)\.\n")


class StandInTeacher:
    """Answers chat completions by the ground-truth labels the prompt states (a key per record):
    `script` maps those labels to a list of behaviours, one per call, the last one repeating."""

    def __init__(self, script: dict[str, list[str]], hold_until_overlap: bool = False):
        self.script = script
        # Hold the first request until a second one comes in (once), so that a concurrent client
        # shows its concurrency however its requests are spread in time; a client that sends one
        # request at a time never brings the second, and max_in_flight stays 1.
        self.overlapped = asyncio.Event()
        self.hold_until_overlap = hold_until_overlap
        self.calls: Counter[str] = Counter()
        self.image_sizes: dict[str, tuple[int, int]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.kill_pid: int | None = None  # a run to kill (SIGKILL) when a request arrives after...
        self.kill_after = 0  # ...this many answered requests
        self.answered: list[str] = []
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)

    async def chat(self, request: Request):
        body = await request.json()
        (message,) = body["messages"]
        image_part, text_part = message["content"]
        key = _LABELS_LINE.search(text_part["text"]).group("labels")
        header, payload = image_part["image_url"]["url"].split(",", 1)
        assert header == "data:image/png;base64"
        self.image_sizes[key] = Image.open(io.BytesIO(base64.b64decode(payload))).size
        if self.kill_pid is not None and len(self.answered) >= self.kill_after:
            os.kill(self.kill_pid, signal.SIGKILL)
            self.kill_pid = None
            return JSONResponse({"error": {"message": "the client is gone"}}, 500)
        self.calls[key] += 1
        behaviours = self.script.get(key, ["ok"])
        behaviour = behaviours[min(self.calls[key], len(behaviours)) - 1]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.in_flight > 1:
            self.overlapped.set()
        try:
            if self.hold_until_overlap:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.overlapped.wait(), OVERLAP_WAIT_S)
        finally:
            self.in_flight -= 1
        if behaviour.isdigit():
            headers = {"Retry-After": "0"} if behaviour == "429" else {}
            return JSONResponse(
                {"error": {"message": f"scripted {behaviour}"}}, int(behaviour), headers=headers
            )
        solution = {"ok": key, "wrong": "Fracture", "no tags": None}[behaviour]
        text = (
            f"Labels: {key}"
            if solution is None
            else (
                f"<think>Looking at the film, the findings support {solution}.</think>\n<solution>{solution}</solution>"
            )
        )
        self.answered.append(key)
        return {
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }


class ThreadedServer:
    def __init__(self, app: FastAPI):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "stand-in teacher did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _manifest(folder: Path, label_sets: list[list[str]], broken: set[int] = frozenset()) -> Path:
    images = folder / "images"
    images.mkdir(parents=True)
    records = []
    for index, labels in enumerate(label_sets):
        path = images / f"r{index}.png"
        if index in broken:
            path.write_bytes(b"truncated")
        else:
            Image.new("L", (48 + index, 40), 30 + 5 * index).save(path)
        records.append(
            ManifestRecord(id=f"r{index}", image=f"images/r{index}.png", labels=labels, source="phantom")
        )
    return write_manifest(records, folder / "manifest.jsonl")


SCRIPTED = {
    "Cardiomegaly": ["ok"],
    "Edema": ["ok"],
    "Edema, Pleural Effusion": ["ok"],
    "No Finding": ["ok"],
    "Pneumothorax": ["wrong"],
    "Atelectasis": ["no tags"],
    "Consolidation": ["429", "ok"],
    "Lung Opacity, Pneumonia": ["500", "500", "ok"],
    "Fracture": ["503"],
    "Support Devices": ["400"],
    "Lung Lesion": ["ok"],  # its image file is broken: never sent
}


def test_generation_validates_retries_and_counts(tmp_path, rg1_dicom_path):
    label_sets = [key.split(", ") for key in SCRIPTED]
    manifest = _manifest(tmp_path / "data", label_sets, broken={len(label_sets) - 1})
    records = read_manifest(manifest)
    records.append(
        ManifestRecord(id="dicom", image=str(rg1_dicom_path), labels=["Enlarged Cardiomediastinum"])
    )
    write_manifest(records, manifest)
    out = tmp_path / "sft" / "traces.jsonl"
    teacher = StandInTeacher(SCRIPTED, hold_until_overlap=True)
    with ThreadedServer(teacher.app) as server:
        settings = TeacherSettings(
            endpoint=server.url, model="teacher-xl", retry={"retries": 2, "backoff_s": 0.01}
        )
        config = TraceRunConfig(
            manifest=manifest, out=out, teacher=settings, concurrency=3, max_image_side=256, progress=False
        )
        summary = generate_traces(config)

    assert summary.written == 7 and summary.skipped == 0
    assert summary.rejected == {"wrong labels": 1, "invalid format": 1}
    assert summary.failed == {"http 503 after 3 attempts": 1, "http 400": 1, "unreadable image": 1}
    assert teacher.calls["Consolidation"] == 2  # 429 with Retry-After: 0, then an answer
    assert teacher.calls["Lung Opacity, Pneumonia"] == 3  # two 500s, then an answer
    assert teacher.calls["Fracture"] == 3 and teacher.calls["Support Devices"] == 1
    assert "Lung Lesion" not in teacher.calls
    assert 1 < teacher.max_in_flight <= 3
    assert summary.usage_reported and (summary.prompt_tokens, summary.completion_tokens) == (900, 180)
    assert max(teacher.image_sizes["Enlarged Cardiomediastinum"]) == 256  # the DICOM film, shrunk
    assert teacher.image_sizes["Cardiomegaly"] == (48, 40)

    written = read_manifest(out)
    by_id = {record.id: record for record in records}
    assert sorted(r.id for r in written) == sorted(["r0", "r1", "r2", "r3", "r6", "r7", "dicom"])
    for record in written:
        assert parse_completion(record.target).labels == by_id[record.id].labels
        assert (
            record.image_path(out.parent).resolve() == by_id[record.id].image_path(manifest.parent).resolve()
        )
        assert record.metadata == {"teacher_model": "teacher-xl", "trace_format": "free_reasoning"}

    rejections = {
        r.id: r for r in map(TraceRejection.model_validate_json, out.with_name("traces.rejects.jsonl").open())
    }
    assert {(i, r.outcome, r.reason) for i, r in rejections.items()} == {
        ("r4", "rejected", "wrong labels"),
        ("r5", "rejected", "invalid format"),
        ("r8", "failed", "http 503 after 3 attempts"),
        ("r9", "failed", "http 400"),
        ("r10", "failed", "unreadable image"),
    }
    assert "<solution>Fracture</solution>" in rejections["r4"].text
    assert "scripted 400" in rejections["r9"].detail

    description = summary.describe(out, out.with_name("traces.rejects.jsonl"))
    assert "7 written, 0 skipped (already done), 2 rejected, 3 failed" in description
    assert "tokens: 900 prompt, 180 completion" in description


RUN_CLI = (
    "import sys, cxr_rl.cli as cli\n"
    "if 'dataprep.traces.commands' not in cli.COMMAND_MODULES:\n"
    "    cli.COMMAND_MODULES += ('dataprep.traces.commands',)\n"
    "sys.exit(cli.main())\n"
)


def test_a_killed_run_resumes_without_redoing_or_losing_records(tmp_path):
    label_sets = [
        [label]
        for label in [
            "Cardiomegaly",
            "Edema",
            "Pneumothorax",
            "Atelectasis",
            "Fracture",
            "Consolidation",
            "Pneumonia",
            "Lung Lesion",
            "No Finding",
            "Lung Opacity",
        ]
    ]
    manifest = _manifest(tmp_path / "data", label_sets)
    out = tmp_path / "traces.jsonl"
    teacher = StandInTeacher({})
    argv = [
        "traces",
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--model",
        "teacher-xl",
        "--concurrency",
        "1",
        "--max-retries",
        "0",
    ]
    with ThreadedServer(teacher.app) as server:
        teacher.kill_after = 4
        run = subprocess.Popen(
            [sys.executable, "-c", RUN_CLI, *argv, "--endpoint", server.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        teacher.kill_pid = run.pid
        output, _ = run.communicate(timeout=120)
        assert run.returncode == -signal.SIGKILL, output
        first_run = out.read_text()
        first_ids = [record.id for record in read_manifest(out)]
        assert len(first_ids) == 4 and teacher.answered[:4] == [labels[0] for labels in label_sets[:4]]

        with out.open("a") as damaged:  # as if the kill had come halfway through a line
            damaged.write('{"id": "r4", "image": "images/r4.png", "lab')
        answered_before = len(teacher.answered)
        rerun = subprocess.run(
            [sys.executable, "-c", RUN_CLI, *argv, "--endpoint", server.url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert rerun.returncode == 0, rerun.stderr
    assert "6 written, 4 skipped (already done), 0 rejected, 0 failed" in rerun.stdout
    assert "repaired: cut a partial last line" in rerun.stdout

    assert out.read_text().startswith(first_run)  # nothing written before was changed or lost
    final_ids = [record.id for record in read_manifest(out)]
    assert sorted(final_ids) == sorted(f"r{i}" for i in range(10)) and len(final_ids) == 10
    asked_again = teacher.answered[answered_before:]
    assert sorted(asked_again) == sorted(labels[0] for labels in label_sets[4:])  # only the unfinished


def test_rejected_traces_are_replaced_from_the_reserve_until_the_set_is_full(tmp_path):
    """SFT set of 4 whose teacher rejects 2: the first reserve records take their places, in the
    reserve's order, and no more are asked for than the target needs; a rerun changes nothing."""
    keys = ["Cardiomegaly", "Pneumothorax", "Edema", "Atelectasis"]  # Pneumothorax, Atelectasis: rejected
    manifest = _manifest(tmp_path / "data", [[key] for key in keys])
    reserve_keys = [
        "No Finding",
        "Fracture",
        "Lung Lesion",
        "Consolidation",
        "Pneumonia",
    ]  # Fracture: rejected
    reserve = _manifest(tmp_path / "reserve", [[key] for key in reserve_keys])
    reserve_records = [
        record.model_copy(update={"id": f"spare{index}", "image": str(record.image_path(reserve.parent))})
        for index, record in enumerate(read_manifest(reserve))
    ]
    write_manifest(reserve_records, reserve)
    out = tmp_path / "sft" / "traces.jsonl"
    teacher = StandInTeacher({"Pneumothorax": ["wrong"], "Atelectasis": ["no tags"], "Fracture": ["no tags"]})
    with ThreadedServer(teacher.app) as server:
        settings = TeacherSettings(endpoint=server.url, model="teacher-xl", retry={"retries": 0})
        config = TraceRunConfig(
            manifest=manifest, out=out, reserve=reserve, teacher=settings, concurrency=2, progress=False
        )
        summary = generate_traces(config)
        again = generate_traces(config)
    written = read_manifest(out)
    assert len(written) == 4 and summary.written == 4 and summary.replaced == 2
    assert sorted(r.id for r in written) == ["r0", "r2", "spare0", "spare2"]
    assert "Consolidation" not in teacher.calls and "Pneumonia" not in teacher.calls  # target reached
    assert summary.rejected == {"wrong labels": 1, "invalid format": 2}
    assert "2 rejected or failed records replaced from the reserve" in summary.describe(out, out)
    assert again.written == 0 and again.skipped == 4 and len(read_manifest(out)) == 4
