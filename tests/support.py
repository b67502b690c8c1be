"""Helpers the tests share: encoded images, and (from benchmarks/common.py, which the benchmarks
use too) free ports, real server processes and random LoRA adapters."""

import base64
import io

import numpy as np
from PIL import Image

from benchmarks.common import ServerProcess, free_port
from benchmarks.common import random_lora_model as random_adapter

__all__ = ["ServerProcess", "b64", "free_port", "noise_xray", "png_bytes", "random_adapter"]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def noise_xray(seed: int, size: int = 256) -> Image.Image:
    values = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    return Image.fromarray(values, mode="L")
