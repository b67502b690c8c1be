"""A Ray actor that receives LoRA updates the way a rollout replica does and stops short of vLLM.

It takes the `AdapterUpdate` from the object store (Ray deserialises it into this process), writes
the two files into a staging folder on tmpfs exactly as `RolloutService.load_adapter_update` does,
validates them with the server's own `check_adapter_files` (safetensors header read, SHA-256 of the
weights) and moves the folder to its version path, as `AdapterRegistry.load` does before it calls
vLLM. What it leaves out: `engine.add_lora` (vLLM reading the files and building the LoRA tensors)
and the canary generation, which need the base model the adapter was made for.
"""

import json
import shutil
import time
from pathlib import Path

from rollout_server.adapters import AdapterRegistry, check_adapter_files
from rollout_server.service import default_adapter_dir
from shared.schemas import AdapterInfo, AdapterUpdate


class AdapterSink:
    """Use through `ray.remote(AdapterSink)`; answers `load_adapter` as `RolloutServerActor` does."""

    def __init__(self, max_rank: int = 16):
        self.adapter_dir = default_adapter_dir()
        # The registry is used only for its staging folder (the engine is never called).
        self.registry = AdapterRegistry(engine=None, adapter_dir=self.adapter_dir, max_rank=max_rank)
        self.max_rank = max_rank
        self.loads: list[dict[str, float]] = []
        self._live: dict[str, Path] = {}

    def load_adapter(self, update: AdapterUpdate) -> AdapterInfo:
        arrived = time.time()  # wall clock: comparable with the driver's stamps on one machine
        started = time.perf_counter()
        folder = self.registry.staging_folder(update.name)
        (folder / "adapter_model.safetensors").write_bytes(update.safetensors)
        (folder / "adapter_config.json").write_text(json.dumps(update.adapter_config))
        written = time.perf_counter()
        rank, _digest = check_adapter_files(folder, self.max_rank)
        checked = time.perf_counter()
        target = self.adapter_dir / update.name / f"v{update.version}"
        shutil.rmtree(target, ignore_errors=True)
        folder.rename(target)
        previous = self._live.get(update.name)
        if previous is not None and previous != target:
            shutil.rmtree(previous, ignore_errors=True)  # the server drops versions no longer in use
        self._live[update.name] = target
        self.loads.append(
            {
                "arrived_at": arrived,
                "write_s": written - started,
                "check_s": checked - written,
                "total_s": time.perf_counter() - started,
            }
        )
        return AdapterInfo(name=update.name, version=update.version or 0, rank=rank, loaded_at=time.time())

    def stats(self) -> list[dict[str, float]]:
        return list(self.loads)

    def forget_adapter(self, name: str) -> list[int]:
        folder = self._live.pop(name, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        return []

    def stop(self) -> None:
        shutil.rmtree(self.adapter_dir, ignore_errors=True)
