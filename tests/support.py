"""Helpers the tests share: free ports, encoded images, server processes, random LoRA adapters."""

import base64
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def noise_xray(seed: int, size: int = 256) -> Image.Image:
    values = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    return Image.fromarray(values, mode="L")


class ServerProcess:
    """A real `cxr-rl serve` process on 127.0.0.1, stopped by `stop()`."""

    def __init__(self, config_path: Path, log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cxr_rl.cli",
                "serve",
                "--config",
                str(config_path),
                "--port",
                str(self.port),
            ],
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_ready(self, token: str | None, timeout_s: float = 600.0) -> None:
        from rollout_server.client import RolloutClient

        deadline = time.monotonic() + timeout_s
        with RolloutClient(self.url, token=token) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    client.wait_ready(timeout_s=5)
                    return
                except TimeoutError:
                    continue
        raise TimeoutError(f"server not ready:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def random_adapter(model_dir: Path, seed: int, scale: float = 0.05, rank: int = 16):
    """A PEFT model over the tiny base with random, non-zero LoRA B matrices (a live adapter)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from trainer.lora import LoraSettings

    torch.manual_seed(seed)
    base = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraSettings(rank=rank, alpha=2 * rank).peft_config(), adapter_name="policy")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, scale)
    return model.eval()
