"""Teacher traces, the pure parts: the teacher prompt and image, trace validation, the retrying
client (over httpx's in-process transport), and recovery of an interrupted output file."""

import asyncio
import base64
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from dataprep.traces.client import TeacherClient, TeacherRequestFailed, TeacherSettings
from dataprep.traces.output import JsonlAppender, recover_output, relocate_image
from dataprep.traces.prompts import image_data_uri, teacher_messages, teacher_prompt
from dataprep.traces.validation import check_trace
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS
from shared.manifest import ManifestRecord
from shared.prompts import BUILTIN_FORMATS, CONTRACT, SFT_OUTPUT_FORMATS


def _decode_uri(uri: str) -> Image.Image:
    header, payload = uri.split(",", 1)
    assert header == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


@pytest.mark.parametrize("name", SFT_OUTPUT_FORMATS)
def test_teacher_prompt_states_labels_format_and_contract(name):
    output_format = BUILTIN_FORMATS[name]
    prompt = teacher_prompt(["Cardiomegaly", "Pleural Effusion"], output_format)
    assert "ground-truth labels of this chest X-ray are: Cardiomegaly, Pleural Effusion." in prompt
    assert ("as if reasoning independently" in prompt) == output_format.rationale  # only_label: none
    assert output_format.instruction in prompt
    assert prompt.endswith(output_format.contract())
    assert output_format.contract() == CONTRACT or name == "only_label"
    assert all(label in prompt for label in CHEXPERT_LABELS)


def test_teacher_messages_put_the_image_first():
    (message,) = teacher_messages("data:image/png;base64,AAAA", "read it")
    assert message["role"] == "user"
    assert [part["type"] for part in message["content"]] == ["image_url", "text"]
    assert message["content"][0]["image_url"]["url"] == "data:image/png;base64,AAAA"


def test_image_data_uri_reencodes_jpeg_and_shrinks_large_images(tmp_path):
    path = tmp_path / "film.jpg"
    Image.new("L", (600, 300), 120).save(path, "JPEG")
    full = _decode_uri(image_data_uri(path))
    assert (full.format, full.size) == ("PNG", (600, 300))
    assert _decode_uri(image_data_uri(path, max_side=200)).size == (200, 100)
    assert _decode_uri(image_data_uri(path, max_side=1000)).size == (600, 300)


def test_image_data_uri_reads_dicom(rg1_dicom_path):
    image = _decode_uri(image_data_uri(rg1_dicom_path, max_side=256))
    assert max(image.size) == 256
    assert len(np.unique(np.asarray(image))) > 50  # a real film, not a blank


def test_image_data_uri_names_an_unreadable_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(UserError, match="broken.png"):
        image_data_uri(path)


GOOD = "<think>The cardiac silhouette is enlarged; the costophrenic angles are blunted.</think>\n<solution>Cardiomegaly, Pleural Effusion</solution>"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (GOOD, ""),
        ("<think>Heart large.</think><solution>Cardiomegaly</solution>", "wrong labels"),
        ("<think>x</think><solution>Cardiomegaly, Pleural Effusion, Edema</solution>", "wrong labels"),
        ("Final answer: Cardiomegaly, Pleural Effusion", "invalid format"),
        (GOOD + "\nHope this helps.", "invalid format"),
        ("<think></think><solution>Cardiomegaly, Pleural Effusion</solution>", "empty reasoning"),
        ("<think>x</think><solution>Cardiomegaly, Pleural Effusion, no edema</solution>", "unclean solution"),
        (
            "<think>x</think><solution>Cardiomegaly, Pleural Effusion, Cardiomegaly</solution>",
            "unclean solution",
        ),
        (
            "<think>x</think><solution>Cardiomegaly, Pleural Effusion, big lungs</solution>",
            "unclean solution",
        ),
    ],
)
def test_check_trace(text, reason):
    verdict = check_trace(text, ["Cardiomegaly", "Pleural Effusion"])
    assert verdict.accepted == (reason == "")
    assert verdict.reason == reason
    assert bool(verdict.detail) == (reason != "")


def _chat_reply(text: str) -> httpx.Response:
    body = {
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 5},
    }
    return httpx.Response(200, json=body)


def _complete(settings: TeacherSettings, answers: list) -> tuple[object, list[httpx.Request]]:
    """Run one `complete` against a transport that gives `answers` in turn (a Response or an
    exception to raise); return the reply (or the exception raised) and the requests seen."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def run():
        async with TeacherClient(settings, transport=httpx.MockTransport(handler)) as teacher:
            try:
                return await teacher.complete([{"role": "user", "content": "hi"}])
            except TeacherRequestFailed as failure:
                return failure

    return asyncio.run(run()), seen


FAST = {"endpoint": "http://teacher.test/v1", "model": "big", "retry": {"retries": 2, "backoff_s": 0.001}}


def test_client_retries_connection_errors_and_5xx_then_succeeds():
    answers = [httpx.ConnectError("refused"), httpx.Response(502, text="bad gateway"), _chat_reply("done")]
    reply, seen = _complete(TeacherSettings(**FAST, api_key="sk-1", temperature=0.3, max_tokens=64), answers)
    assert reply.text == "done" and (reply.prompt_tokens, reply.completion_tokens) == (11, 5)
    assert len(seen) == 3
    assert str(seen[0].url) == "http://teacher.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-1"
    body = json.loads(seen[0].content)
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("big", 0.3, 64)


def test_client_gives_up_after_max_retries():
    failure, seen = _complete(TeacherSettings(**FAST), [httpx.Response(503, text="overloaded")])
    assert isinstance(failure, TeacherRequestFailed)
    assert failure.reason == "http 503 after 3 attempts" and "overloaded" in failure.detail
    assert len(seen) == 3


def test_client_does_not_retry_other_client_errors():
    failure, seen = _complete(TeacherSettings(**FAST), [httpx.Response(401, text="bad key")])
    assert (failure.reason, len(seen)) == ("http 401", 1)


def test_client_honours_retry_after():
    answers = [httpx.Response(429, headers={"Retry-After": "0.3"}), _chat_reply("ok")]
    started = time.monotonic()
    reply, seen = _complete(TeacherSettings(**FAST), answers)
    assert reply.text == "ok" and len(seen) == 2
    assert time.monotonic() - started >= 0.3  # the backoff alone would have waited ~1 ms


def test_client_reports_a_malformed_answer():
    failure, _ = _complete(TeacherSettings(**FAST), [httpx.Response(200, json={"choices": []})])
    assert failure.reason == "malformed response"


def test_full_chat_completions_url_is_kept():
    settings = TeacherSettings(endpoint="https://api.example/v1/chat/completions/", model="m")
    assert settings.chat_url() == "https://api.example/v1/chat/completions"


def _record_line(record_id: str) -> str:
    record = ManifestRecord(
        id=record_id, image=f"{record_id}.png", labels=["Edema"], target="<think>a</think>"
    )
    return record.model_dump_json() + "\n"


def test_recover_output_keeps_finished_lines_and_cuts_a_partial_tail(tmp_path):
    path = tmp_path / "sft.jsonl"
    good = _record_line("a") + _record_line("b")
    path.write_text(good + _record_line("c")[:25])
    recovered = recover_output(path)
    assert [record.id for record in recovered.records] == ["a", "b"]
    assert recovered.dropped_bytes == 25
    assert path.read_text() == good
    assert recover_output(path).dropped_bytes == 0


def test_recover_output_cuts_a_corrupt_last_line(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(_record_line("a") + '{"id": "b", "ima\x00ge"}\n')
    recovered = recover_output(path)
    assert [record.id for record in recovered.records] == ["a"] and recovered.dropped_bytes > 0
    assert path.read_text() == _record_line("a")


def test_recover_output_completes_a_whole_last_line_missing_its_newline(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(_record_line("a") + _record_line("b").rstrip("\n"))
    recovered = recover_output(path)
    assert [record.id for record in recovered.records] == ["a", "b"] and recovered.dropped_bytes == 0
    assert path.read_text() == _record_line("a") + _record_line("b")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_record_line("a") + "{broken\n" + _record_line("b"), r"sft.jsonl:2: not valid JSON"),
        (_record_line("a") + _record_line("a"), r"sft.jsonl:2: record id 'a' appears twice"),
        (json.dumps({"id": "a", "image": "a.png", "labels": []}) + "\n" + _record_line("b"), "has no target"),
    ],
)
def test_recover_output_refuses_damage_before_the_last_line(tmp_path, content, message):
    path = tmp_path / "sft.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        recover_output(path)
    assert path.read_text() == content  # nothing cut


def test_appender_writes_each_line_at_once_and_creates_the_file_lazily(tmp_path):
    path = tmp_path / "sub" / "log.jsonl"
    with JsonlAppender(path) as log:
        assert not path.exists()
        log.append({"id": "a"})
        assert path.read_text() == '{"id": "a"}\n'  # on disk before the appender closes


def test_relocate_image_keeps_images_reachable_from_the_output_folder(tmp_path):
    record = ManifestRecord(id="a", image="images/a.png", labels=["Edema"])
    moved = relocate_image(record, tmp_path / "in", tmp_path / "out" / "sft")
    assert Path(moved.image) == Path("../../in/images/a.png")
    absolute = record.model_copy(update={"image": str(tmp_path / "a.png")})
    assert relocate_image(absolute, tmp_path / "in", tmp_path / "out") is absolute
