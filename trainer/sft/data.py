"""SFT examples with assistant-only loss: an X-ray, its prompt, and a target whose tokens alone carry loss.

Labels come from two renderings with the model's own chat template: the prompt (generation prompt
included) and the whole conversation (prompt + assistant answer). The prompt's token ids must be a
prefix of the conversation's; the tokens after it, up to and including the first end-of-turn
token, are the answer. Everything else (system and user text, image placeholder tokens, what the
template writes after the end-of-turn token, padding) is -100. This needs no `{% generation %}`
tags, which real checkpoints' templates lack.
"""

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared.chat import render_prompt
from shared.errors import UserError
from shared.images import load_xray
from shared.manifest import ManifestRecord, read_manifest
from trainer.logprobs import IMAGE_KEYS, SEQUENCE_KEYS

IGNORE_INDEX = -100  # torch cross-entropy's ignore_index


@dataclass
class SftExample:
    """One encoded example (batch of one): the processor's tensors and the labels [1, L]."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor


@dataclass
class SftBatch:
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor  # [B, L]; IGNORE_INDEX everywhere but answer tokens

    def to(self, device: torch.device, dtype: torch.dtype) -> "SftBatch":
        inputs = {}
        for key, value in self.inputs.items():
            value = value.to(device)
            inputs[key] = value.to(dtype) if key == "pixel_values" else value
        return SftBatch(inputs, self.labels.to(device))

    def answer_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def conversation(prompt_messages: list[dict[str, Any]], answer: str) -> list[dict[str, Any]]:
    return [*prompt_messages, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


def encode_example(
    processor: Any,
    prompt_messages: list[dict[str, Any]],
    answer: str,
    image: Any,
    end_of_turn: frozenset[int],
) -> SftExample:
    """Tokenise prompt + answer for one X-ray; only the answer and its end-of-turn token get labels."""
    answer = answer.strip()  # chat templates such as Gemma3's trim message text themselves
    if not answer:
        raise UserError("empty SFT target")
    prompt_text = render_prompt(processor, prompt_messages)
    full_text = processor.apply_chat_template(conversation(prompt_messages, answer), tokenize=False)
    prompt_ids = processor(text=[prompt_text], images=[image], return_tensors="pt")["input_ids"][0]
    features = processor(text=[full_text], images=[image], return_tensors="pt")
    full_ids = features["input_ids"][0]
    start = len(prompt_ids)
    if len(full_ids) <= start or not torch.equal(full_ids[:start], prompt_ids):
        raise UserError(
            "the chat template renders the prompt differently inside the full conversation (its token ids "
            "are not a prefix), so the answer tokens cannot be located; assistant-only loss needs a template "
            "whose generation prompt is a prefix of the conversation"
        )
    answer_end = next((i + 1 for i in range(start, len(full_ids)) if int(full_ids[i]) in end_of_turn), None)
    if answer_end is None:
        raise UserError("the chat template does not close the assistant turn with an end-of-turn token")
    decoded = processor.tokenizer.decode(
        full_ids[start : answer_end - 1], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    if decoded.strip() != answer:
        raise UserError(
            f"the answer tokens decode to {decoded[:60]!r}..., not the target {answer[:60]!r}...: the chat "
            "template rewrites the assistant message, or the target holds an end-of-turn token"
        )
    labels = torch.full_like(full_ids, IGNORE_INDEX)
    labels[start:answer_end] = full_ids[start:answer_end]
    inputs = {key: value for key, value in features.items() if isinstance(value, torch.Tensor)}
    return SftExample(inputs, labels.unsqueeze(0))


def collate(examples: Sequence[SftExample], pad_id: int) -> SftBatch:
    """Right-pad the token axis (pad id, attention 0, label -100); stack the per-image tensors."""
    longest = max(example.labels.shape[1] for example in examples)
    inputs: dict[str, torch.Tensor] = {}
    for key in examples[0].inputs:
        values = [example.inputs[key] for example in examples]
        if key in SEQUENCE_KEYS:
            fill = pad_id if key == "input_ids" else 0
            inputs[key] = torch.cat([pad_right(value, longest, fill) for value in values], dim=0)
        elif key in IMAGE_KEYS:
            inputs[key] = torch.cat(values, dim=0)
        else:
            raise ValueError(f"processor output {key!r} has no known batching rule")
    labels = torch.cat([pad_right(example.labels, longest, IGNORE_INDEX) for example in examples], dim=0)
    return SftBatch(inputs, labels)


def pad_right(row: torch.Tensor, length: int, fill: int) -> torch.Tensor:
    padding = torch.full((row.shape[0], length - row.shape[1]), fill, dtype=row.dtype)
    return torch.cat([row, padding], dim=1)


class SftDataset(torch.utils.data.Dataset):
    """Manifest records encoded on demand (pixel values of thousands of X-rays would not fit in memory)."""

    def __init__(
        self,
        records: Sequence[ManifestRecord],
        processor: Any,
        prompt_messages: list[dict[str, Any]],
        end_of_turn: frozenset[int],
    ):
        self.records = list(records)  # image paths absolute (as `read_sft_manifest` makes them)
        self.processor = processor
        self.prompt_messages = prompt_messages
        self.end_of_turn = end_of_turn

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> SftExample:
        record = self.records[index]
        try:
            image = load_xray(record.image)
            return encode_example(
                self.processor, self.prompt_messages, record.target or "", image, self.end_of_turn
            )
        except UserError as error:
            raise UserError(f"record {record.id!r}: {error}") from None


def read_sft_manifest(path: str | Path) -> list[ManifestRecord]:
    """A manifest whose every record has an SFT target and an image file, image paths made absolute;
    an empty manifest, a record without a target or a missing image is an error."""
    path = Path(path)
    records = read_manifest(path)
    if not records:
        raise UserError(f"{path}: the manifest holds no records")
    resolved = []
    for number, record in enumerate(records, start=1):
        where = f"{path}: record {number} (id {record.id!r})"
        if not (record.target or "").strip():
            raise UserError(f"{where} has no 'target' (the SFT answer text)")
        image = record.image_path(path.parent).resolve()
        if not image.is_file():  # found now rather than hours into training
            raise UserError(f"{where}: image not found: {image}")
        resolved.append(record.model_copy(update={"image": str(image)}))
    return resolved


def patient_of(record: ManifestRecord) -> str:
    return str(record.metadata.get("subject_id") or record.metadata.get("patient_id") or record.id)


def hold_out_patients(
    records: Sequence[ManifestRecord], fraction: float, seed: int
) -> tuple[list[ManifestRecord], list[ManifestRecord]]:
    """(train, validation): about `fraction` of the patients held out, all their images together,
    so no patient is on both sides; the same seed gives the same split."""
    by_patient: dict[str, list[ManifestRecord]] = defaultdict(list)
    for record in records:
        by_patient[patient_of(record)].append(record)
    patients = sorted(by_patient)
    if len(patients) < 2:
        raise UserError("cannot hold out a validation set: the training manifest has a single patient")
    random.Random(seed).shuffle(patients)
    held = min(len(patients) - 1, max(1, round(fraction * len(patients))))
    val_patients = set(patients[:held])
    train = [record for record in records if patient_of(record) not in val_patients]
    val = [record for record in records if patient_of(record) in val_patients]
    return train, val


def balance_labels(records: Sequence[ManifestRecord], power: float, max_repeats: int) -> list[ManifestRecord]:
    """Each record repeated round((n_common / n_rarest) ** power) times (at most `max_repeats`), where
    n_rarest counts the training records with the record's rarest label and n_common those with the
    commonest label: power 0 keeps the data as drawn, 0.5 is square-root balancing. Macro-F1 weighs a
    label seen in 3% of images as much as one seen in 50%; a model trained on the images as drawn
    learns to name the rare ones almost never. Validation records are never repeated."""
    if power == 0:
        return list(records)
    counts = Counter(label for record in records for label in record.labels)
    if not counts:
        return list(records)
    common = max(counts.values())
    balanced: list[ManifestRecord] = []
    for record in records:
        rarest = min((counts[label] for label in record.labels), default=common)
        balanced.extend([record] * max(1, min(max_repeats, round((common / rarest) ** power))))
    return balanced
