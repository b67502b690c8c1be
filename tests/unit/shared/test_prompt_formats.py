"""Every prompt format, built-in or loaded from a user's file, names the 14 labels, ends in the
`<think>` / `<solution>` contract, and renders with an X-ray through the tiny MedGemma's chat
template and processor within the model's length, leaving room for a 512-token completion."""

import json

import numpy as np
import pytest
from PIL import Image

from shared.chat import render_prompt
from shared.errors import UserError
from shared.labels import CHEXPERT_LABELS
from shared.prompts import (
    BUILTIN_FORMATS,
    CONTRACT,
    LABELS_ONLY_CONTRACT,
    REASONING_FORMATS,
    SFT_OUTPUT_FORMATS,
    TINY_MODEL_FORMATS,
    PromptFormat,
    PromptRegistry,
    user_messages,
)

COMPLETION_BUDGET = 512
PAPER_FORMATS = sorted(set(BUILTIN_FORMATS) - set(TINY_MODEL_FORMATS))  # the formats a real model reads
USER_FORMATS_YAML = """\
terse: Name the findings in one short sentence, then the labels.
long_checklist: |
  Go through the film systematically: quality, rotation, inspiration, lines and tubes, airway,
  mediastinum, hila, heart, each lung zone on both sides, pleura, diaphragm, bones, soft tissues.
  Then map each abnormal finding to one of the labels.
"""


@pytest.fixture(scope="module")
def processor(tiny_medgemma):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_medgemma)


@pytest.fixture(scope="module")
def model_config(tiny_medgemma):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(tiny_medgemma)


def _xray(seed: int = 0) -> Image.Image:
    values = np.random.default_rng(seed).integers(0, 256, (320, 280), dtype=np.uint8)
    return Image.fromarray(values, mode="L").convert("RGB")


def _check_renders_within_length(prompt_format: PromptFormat, processor, model_config) -> None:
    rendered = render_prompt(processor, user_messages(prompt_format))
    assert prompt_format.user_text() in rendered
    after_contract = rendered.split(prompt_format.contract(), 1)[1]
    assert len(after_contract) < 60 and not any(label in after_contract for label in CHEXPERT_LABELS)
    inputs = processor(text=[rendered], images=[_xray()], return_tensors="pt")
    prompt_tokens = inputs["input_ids"].shape[1]
    assert prompt_tokens <= model_config.text_config.max_position_embeddings - COMPLETION_BUDGET
    assert int(inputs["token_type_ids"].sum()) == model_config.mm_tokens_per_image  # the image is in
    assert prompt_format.contract() in processor.tokenizer.decode(inputs["input_ids"][0])


def test_the_registry_holds_every_reasoning_and_sft_format():
    assert set(BUILTIN_FORMATS) == set(REASONING_FORMATS) | set(SFT_OUTPUT_FORMATS) | set(TINY_MODEL_FORMATS)
    assert len(REASONING_FORMATS) == 9 and set(SFT_OUTPUT_FORMATS) == {
        "only_label",
        "free_reasoning",
        "reasoning_narrative",
        "reasoning_a_sft",
    }
    assert PromptRegistry().names() == sorted(BUILTIN_FORMATS)


@pytest.mark.parametrize("name", PAPER_FORMATS)
def test_builtin_format_names_all_labels_and_ends_in_the_contract(name):
    text = BUILTIN_FORMATS[name].user_text()
    assert all(label in text for label in CHEXPERT_LABELS)
    assert text.endswith(CONTRACT if name != "only_label" else LABELS_ONLY_CONTRACT)
    for contract in (CONTRACT, LABELS_ONLY_CONTRACT):
        assert "<think>" in contract and "<solution>" in contract


@pytest.mark.parametrize("name", PAPER_FORMATS)
def test_builtin_format_renders_with_an_image_within_the_model_length(name, processor, model_config):
    _check_renders_within_length(BUILTIN_FORMATS[name], processor, model_config)


def _image_share(prompt_format: PromptFormat, processor) -> float:
    rendered = render_prompt(processor, user_messages(prompt_format))
    inputs = processor(text=[rendered], images=[_xray()], return_tensors="pt")
    return float(inputs["token_type_ids"].sum()) / inputs["input_ids"].shape[1]


def test_the_tiny_models_checklist_gives_the_image_a_large_share_of_the_prompt(processor):
    """The demo's tiny model answers after three words: its 16 image tokens are over a third of the
    prompt, where the paper's Only Label prompt leaves them under a tenth."""
    checklist = BUILTIN_FORMATS["label_checklist"]
    assert checklist.kind == "tiny" and checklist.rationale
    assert checklist.user_text() == "Check each label:" and _image_share(checklist, processor) > 0.35
    assert _image_share(BUILTIN_FORMATS["only_label"], processor) < 0.1


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_user_formats_load_from_a_file_and_render(tmp_path, suffix, processor, model_config):
    import yaml

    path = tmp_path / f"formats{suffix}"
    data = yaml.safe_load(USER_FORMATS_YAML)
    path.write_text(USER_FORMATS_YAML if suffix == ".yaml" else json.dumps(data))
    prompts = PromptRegistry()
    assert prompts.add_from_file(path) == ["long_checklist", "terse"]
    for name in ("terse", "long_checklist"):
        user_format = prompts.get(name)
        assert (user_format.kind, user_format.instruction) == ("user", data[name].strip())
        assert all(label in user_format.user_text() for label in CHEXPERT_LABELS)
        assert user_format.user_text().endswith(CONTRACT)
        _check_renders_within_length(user_format, processor, model_config)
    assert prompts.get("free_reasoning") == BUILTIN_FORMATS["free_reasoning"]  # built-ins stay


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("terse: [unclosed\n", "cannot parse prompt formats"),
        ("- a list\n- of lines\n", "expected a mapping of format name to instruction text"),
        ("terse: ''\n", "format 'terse': the instruction must be non-empty text"),
        ("terse:\n  nested: mapping\n", "format 'terse': the instruction must be non-empty text"),
        ("", "expected a mapping of format name to instruction text"),
    ],
)
def test_bad_format_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "formats.yaml"
    path.write_text(content)
    prompts = PromptRegistry()
    with pytest.raises(UserError, match=message) as raised:
        prompts.add_from_file(path)
    assert str(path) in str(raised.value)
    assert prompts.names() == sorted(BUILTIN_FORMATS)  # nothing half-loaded


def test_bad_json_format_file_names_the_file(tmp_path):
    path = tmp_path / "formats.json"
    path.write_text('{"terse": "one line",}')
    with pytest.raises(UserError, match="formats.json: cannot parse prompt formats"):
        PromptRegistry().add_from_file(path)


def test_missing_format_file_and_unknown_name_are_named(tmp_path):
    with pytest.raises(UserError, match="prompt format file not found: .*nowhere.yaml"):
        PromptRegistry().add_from_file(tmp_path / "nowhere.yaml")
    with pytest.raises(UserError, match="unknown prompt format 'poetry'; known formats: .*reasoning_a_sft"):
        PromptRegistry().get("poetry")


def test_a_binary_format_file_is_a_user_error(tmp_path):
    path = tmp_path / "formats.yaml"
    path.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(UserError, match="formats.yaml: not a UTF-8 text file"):
        PromptRegistry().add_from_file(path)


def test_a_user_format_may_not_replace_a_built_in(tmp_path):
    path = tmp_path / "formats.yaml"
    path.write_text("free_reasoning: think harder\n")
    with pytest.raises(UserError, match="'free_reasoning' would replace a built-in"):
        PromptRegistry().add_from_file(path)
    path.write_text("terse: ''\n")
    with pytest.raises(UserError, match="format 'terse': the instruction must be non-empty"):
        PromptRegistry().add_from_file(path)
