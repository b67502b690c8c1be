"""What the teacher model is asked for one X-ray: the image as a PNG data URI, and a prompt that
gives the ground-truth labels and asks for the reasoning that reaches them as if independently, in
one of our SFT output formats, ending in the `<think>` / `<solution>` contract."""

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from shared.images import load_xray
from shared.prompts import PromptFormat

TEACHER_ROLE = (
    "You are an expert radiologist writing worked examples that teach a model to read chest X-rays."
)


def teacher_prompt(labels: Sequence[str], output_format: PromptFormat) -> str:
    listed = ", ".join(labels)
    if not output_format.rationale:  # Only Label: the answer is the labels, the think block empty
        return (
            f"{TEACHER_ROLE}\n"
            f"The ground-truth labels of this chest X-ray are: {listed}.\n"
            f"Style of the answer: {output_format.instruction}\n"
            f"The <solution> block must list exactly these labels: {listed}.\n"
            f"{output_format.contract()}"
        )
    return (
        f"{TEACHER_ROLE}\n"
        f"The ground-truth labels of this chest X-ray are: {listed}.\n"
        "Write the reasoning a radiologist would write while reading this image and reaching exactly "
        "these labels, as if reasoning independently: ground every step in what the image shows, weigh "
        "the findings that are absent as well as those present, and never mention that the labels were "
        "given to you.\n"
        f"Style of the reasoning: {output_format.instruction}\n"
        f"The <solution> block must list exactly these labels: {listed}.\n"
        f"{output_format.contract()}"
    )


def image_data_uri(path: str | Path, max_side: int | None = None) -> str:
    """The X-ray (JPEG, PNG or DICOM) re-encoded as a grayscale PNG data URI, its longer side
    shrunk to `max_side` pixels when larger (a full-size film is megabytes of base64 per request)."""
    image = load_xray(path).convert("L")
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def teacher_messages(image_uri: str, prompt: str) -> list[dict[str, Any]]:
    """One OpenAI-style user message: the image part first, then the prompt."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_uri}},
                {"type": "text", "text": prompt},
            ],
        }
    ]
