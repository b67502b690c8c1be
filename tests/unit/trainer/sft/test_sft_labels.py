"""Assistant-only loss: on real tiny models of both architectures, only the answer tokens and the
end-of-turn token that closes them carry labels; prompt, image placeholders and padding are -100."""

import random

import pytest
import torch
from transformers import AutoConfig

from shared.errors import UserError
from shared.images import load_xray
from shared.manifest import read_manifest
from shared.prompts import PromptRegistry, user_messages
from trainer.lora import LoraSettings
from trainer.model import end_of_turn_ids, load_policy, load_processor
from trainer.sft.data import IGNORE_INDEX, SftExample, collate, encode_example
from trainer.sft.training import answer_loss
from trainer.templates import synthetic_target

END_OF_TURN_TEXT = {"medgemma": "<end_of_turn>", "qwen": "<|im_end|>"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(params=["medgemma", "qwen"])
def arch(request) -> str:
    return request.param


@pytest.fixture
def model_dir(arch, request):
    return request.getfixturevalue("tiny_medgemma" if arch == "medgemma" else "tiny_qwen")


@pytest.fixture(scope="module")
def phantom_xrays(phantom_root):
    manifest = phantom_root / "manifests" / "mimic_train.jsonl"
    records = read_manifest(manifest)[:2]
    return [(record.labels, load_xray(record.image_path(manifest.parent))) for record in records]


def prompt(name: str) -> list[dict]:
    return user_messages(PromptRegistry().get(name))


def encode(model_dir, prompt_name: str, answer: str, image) -> tuple[SftExample, object]:
    processor = load_processor(model_dir)
    example = encode_example(
        processor, prompt(prompt_name), answer, image, end_of_turn_ids(model_dir, processor)
    )
    return example, processor


def test_only_the_answer_and_its_end_of_turn_carry_labels(arch, model_dir, phantom_xrays):
    labels, image = phantom_xrays[0]
    answer = synthetic_target(labels, "reasoning_a_sft", random.Random(0))
    example, processor = encode(model_dir, "reasoning_a_sft", answer, image)
    ids, target = example.inputs["input_ids"][0], example.labels[0]
    labelled = target != IGNORE_INDEX

    decoded = processor.tokenizer.decode(target[labelled], skip_special_tokens=False)
    assert decoded == answer + END_OF_TURN_TEXT[arch]
    # the labelled tokens are one run at the end of the sequence, copying the input ids
    positions = labelled.nonzero().flatten()
    assert positions.tolist() == list(range(int(positions[0]), int(positions[-1]) + 1))
    assert torch.equal(target[labelled], ids[labelled])
    # the prompt (rendered alone) is exactly what is masked before the answer
    prompt_ids = processor(text=[processor.apply_chat_template(prompt("reasoning_a_sft"), add_generation_prompt=True, tokenize=False)], images=[image], return_tensors="pt")["input_ids"][0]  # fmt: skip
    assert int(positions[0]) == len(prompt_ids)
    assert (target[: len(prompt_ids)] == IGNORE_INDEX).all()
    # image placeholder tokens are in the sequence and all masked
    is_image = ids == AutoConfig.from_pretrained(model_dir).image_token_id
    assert int(is_image.sum()) >= 16
    assert (target[is_image] == IGNORE_INDEX).all()
    # what the template writes after the end-of-turn token (a newline) carries no loss
    assert int(positions[-1]) < len(ids) - 1


def test_padding_is_masked(model_dir, phantom_xrays):
    processor = load_processor(model_dir)
    end_of_turn = end_of_turn_ids(model_dir, processor)
    (labels_a, image_a), (labels_b, image_b) = phantom_xrays
    short = encode_example(processor, prompt("only_label"), "<think>Clear.</think>\n<solution>No Finding</solution>", image_a, end_of_turn)  # fmt: skip
    long = encode_example(processor, prompt("only_label"), synthetic_target(labels_b, "free_reasoning", random.Random(1)), image_b, end_of_turn)  # fmt: skip
    pad_id = processor.tokenizer.pad_token_id
    batch = collate([short, long], pad_id)

    short_length, longest = short.labels.shape[1], long.labels.shape[1]
    assert longest > short_length
    assert batch.labels.shape == batch.inputs["input_ids"].shape == (2, longest)
    assert (batch.labels[0, short_length:] == IGNORE_INDEX).all()
    assert (batch.inputs["attention_mask"][0, short_length:] == 0).all()
    assert (batch.inputs["input_ids"][0, short_length:] == pad_id).all()
    assert torch.equal(batch.labels[0, :short_length], short.labels[0])
    assert torch.equal(batch.labels[1], long.labels[0])
    assert batch.answer_tokens() == int(
        (short.labels != IGNORE_INDEX).sum() + (long.labels != IGNORE_INDEX).sum()
    )


def test_changing_the_prompt_leaves_the_answer_labels_alone(model_dir, phantom_xrays):
    labels, image = phantom_xrays[0]
    answer = synthetic_target(labels, "only_label", random.Random(3))
    first, _ = encode(model_dir, "only_label", answer, image)
    second, _ = encode(model_dir, "reasoning_a_sft", answer, image)
    assert first.labels.shape[1] != second.labels.shape[1]  # the prompts differ in length
    first_answer = first.labels[first.labels != IGNORE_INDEX]
    second_answer = second.labels[second.labels != IGNORE_INDEX]
    assert torch.equal(first_answer, second_answer)


def test_answer_loss_is_the_models_own_loss_on_the_answer(model_dir, phantom_xrays):
    """The `logits_to_keep` slicing lines up: our summed loss equals transformers' mean loss x count."""
    model, processor = load_policy(model_dir, LoraSettings(), device="cpu", gradient_checkpointing=False)
    model.eval()
    end_of_turn = end_of_turn_ids(model_dir, processor)
    examples = [
        encode_example(
            processor,
            prompt("only_label"),
            synthetic_target(labels, "free_reasoning", random.Random(i)),
            image,
            end_of_turn,
        )  # fmt: skip
        for i, (labels, image) in enumerate(phantom_xrays)
    ]
    batch = collate(examples, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        loss, count = answer_loss(model, batch)
        reference = model(**batch.inputs, labels=batch.labels, use_cache=False).loss
    assert count == batch.answer_tokens()
    assert float(loss) / count == pytest.approx(float(reference), rel=1e-5)


def test_a_template_that_renders_the_prompt_differently_is_refused(tiny_medgemma, phantom_xrays):
    processor = load_processor(tiny_medgemma)
    # generation prompt says "model", the rendered assistant turn says "assistant": not a prefix
    processor.chat_template = processor.chat_template.replace(
        "set role = 'model' if message['role'] == 'assistant' else message['role']",
        "set role = message['role']",
    )
    with pytest.raises(UserError, match="not a prefix"):
        encode_example(processor, prompt("only_label"), "<think>x</think>\n<solution>Edema</solution>", phantom_xrays[0][1], end_of_turn_ids(tiny_medgemma, processor))  # fmt: skip


def test_a_template_that_rewrites_the_answer_is_refused(tiny_qwen, phantom_xrays):
    processor = load_processor(tiny_qwen)
    # like templates that strip reasoning from assistant turns: the trained tokens would not be the target
    processor.chat_template = processor.chat_template.replace(
        "{{ item['text'] }}", "{{ item['text'].split('</think>')[-1] }}"
    )
    with pytest.raises(UserError, match="not the target"):
        encode_example(processor, prompt("only_label"), "<think>x</think>\n<solution>Edema</solution>", phantom_xrays[0][1], end_of_turn_ids(tiny_qwen, processor))  # fmt: skip


def test_only_the_language_models_lora_trains(model_dir):
    model, _ = load_policy(model_dir, LoraSettings(), device="cpu", gradient_checkpointing=True)
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    # 2 text layers x 7 projections (q, k, v, o, gate, up, down) x (A, B)
    assert len(trainable) == 2 * 7 * 2
    assert all(".language_model." in name and ".lora_" in name and ".policy." in name for name in trainable)
    assert model.training and model.is_gradient_checkpointing
