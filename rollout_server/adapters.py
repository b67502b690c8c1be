"""LoRA adapters by name and version in a running vLLM engine.

Designed around traps seen in the field:
- every version gets its own vLLM adapter name and integer id: vLLM keys its prefix cache by
  adapter name, so reusing a name could mix an old policy's cached prefix with a new decode;
- no `load_inplace=True`: the flag sticks to the cached request and vLLM re-reads the adapter on
  every scheduler step;
- only versions still in use stay loaded: the latest of each name, and older ones until their
  in-flight requests finish;
- a canary (prompt logprobs of a text-only prompt) proves a load live before it is reported: they
  must match the sender's for the same weights and move from a reference the server holds as the
  sender's moved (rollout_server/canary.py; the trainer picks the canary so that the move shows in
  bf16), or, for an adapter loaded without a check, change from the previous version's (a changed
  file whose outputs do not change is indistinguishable from a load that did not take);
- vLLM applies LoRA to the language model only for Gemma3 and Qwen-VL, so an adapter that
  targets the vision tower is refused rather than silently half-applied;
- a load repeated by a client that never heard the answer (a timeout, a reset) is answered with the
  version the first one made, not loaded again: the same client-chosen version with the same weights,
  or the same idempotency key.
"""

import asyncio
import hashlib
import json
import re
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open

from rollout_server import canary
from rollout_server.engine import RolloutEngine
from rollout_server.errors import RequestError, invalid, not_found
from shared.schemas import AdapterInfo, AdapterSelector, CanaryCheck

VISION_MODULE_PATTERN = re.compile(
    r"vision_tower|vision_model|visual|multi_modal_projector|merger|patch_embed"
)
REMEMBERED_KEYS = 1024  # idempotency keys kept (a retry comes within seconds or minutes)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class AdapterVersion:
    name: str
    version: int
    lora_int_id: int
    path: Path
    rank: int
    digest: str
    served_weights: "ServedWeights | None" = None
    canary_delta: float | None = None
    reading: canary.CanaryReading = field(default_factory=canary.CanaryReading)
    canary_reference: int | None = None
    loaded_at: float = field(default_factory=time.time)
    in_flight: int = 0

    @property
    def vllm_name(self) -> str:
        return f"{self.name}@v{self.version}"

    def lora_request(self):
        # vLLM (seconds to import) loads in the server process only, not where replicas are placed
        from vllm.lora.request import LoRARequest

        return LoRARequest(self.vllm_name, self.lora_int_id, str(self.path))

    def info(self) -> AdapterInfo:
        return AdapterInfo(
            name=self.name,
            version=self.version,
            rank=self.rank,
            loaded_at=self.loaded_at,
            in_flight=self.in_flight,
            canary_delta=self.canary_delta,
            canary_error=self.reading.error,
            canary_reference=self.canary_reference,
            canary_move=self.reading.move,
            canary_agreement=self.reading.agreement,
            canary_agreement_se=self.reading.agreement_se,
        )


@dataclass(frozen=True)
class ServedWeights:
    """An adapter's tensors as the engine holds them (cast to its LoRA dtype): bf16 rounds away part
    of every small update, so two versions can differ in their files and not in what is served."""

    tensors: str  # digest of the tensors as sent
    served: str  # digest of the tensors in the engine's LoRA dtype
    inert: bool  # every module's lora_A or lora_B is zero: serves the base model's outputs


def servable_weights(folder: Path, dtype: Any) -> ServedWeights:
    # torch likewise: the server process has it through vLLM, the driver need not
    import torch
    from safetensors.torch import load_file

    def raw(tensor: "torch.Tensor") -> bytes:
        return tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()

    tensors = load_file(str(folder / "adapter_model.safetensors"))
    sent, digest = hashlib.sha256(), hashlib.sha256()
    zero: dict[str, set[str]] = {}
    for key in sorted(tensors):
        served = tensors[key].to(dtype)
        for target, tensor in ((sent, tensors[key]), (digest, served)):
            target.update(key.encode())
            target.update(raw(tensor))
        module, _, part = key.partition(".lora_")
        zero.setdefault(module, set())
        if not bool(served.any()):
            zero[module].add(part.split(".")[0])
    inert = all(parts for parts in zero.values())
    return ServedWeights(sent.hexdigest(), digest.hexdigest(), inert)


def check_adapter_files(folder: Path, max_rank: int) -> tuple[int, str]:
    """Validate a PEFT adapter folder; return (rank, digest of its weights and config)."""
    for name in ADAPTER_FILES:
        if not (folder / name).is_file():
            raise invalid("adapter", f"missing {name} in the adapter")
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise invalid("adapter_config", f"not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise invalid("adapter_config", "a JSON object (PEFT's adapter_config.json)")
    rank = config.get("r", 0)
    if not isinstance(rank, int) or not 1 <= rank <= max_rank:
        raise invalid(
            "adapter_config.r", f"rank {rank!r} is outside 1..{max_rank} (the server's max LoRA rank)"
        )
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    if not isinstance(targets, list) or not all(isinstance(target, str) for target in targets):
        raise invalid("adapter_config.target_modules", "a module name pattern or a list of module names")
    if any(VISION_MODULE_PATTERN.search(target) for target in targets):
        raise invalid(
            "adapter_config.target_modules",
            "targets the vision tower; vLLM applies LoRA to the language model only for this model",
        )

    weights = folder / "adapter_model.safetensors"
    try:
        with safe_open(str(weights), "pt") as tensors:
            keys = list(tensors.keys())
    except Exception as error:  # safetensors raises its own error types
        raise invalid("adapter", f"adapter_model.safetensors is unreadable ({error})") from None
    vision_keys = [key for key in keys if VISION_MODULE_PATTERN.search(key)]
    if vision_keys:
        raise invalid(
            "adapter", f"has vision-tower weights ({vision_keys[0]}, ...); only language-model LoRA is served"
        )
    if not keys:
        raise invalid("adapter", "adapter_model.safetensors holds no tensors")
    with weights.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256")
    digest.update(json.dumps(config, sort_keys=True).encode())
    return rank, digest.hexdigest()


class AdapterRegistry:
    def __init__(self, engine: RolloutEngine, adapter_dir: Path, max_rank: int, canary: bool = True):
        self.engine = engine
        self.adapter_dir = adapter_dir
        self.max_rank = max_rank
        self.canary = canary
        self._versions: dict[str, dict[int, AdapterVersion]] = {}
        self._retired: set[tuple[str, int]] = set()  # deleted while still in flight
        self._next_lora_id = 1
        self._lock = asyncio.Lock()
        self._keys: OrderedDict[str, tuple[str, str, AdapterVersion]] = OrderedDict()  # key -> name, digest
        self.swap_seconds: list[float] = []
        self.created_at = time.time()

    def latest(self, name: str) -> AdapterVersion | None:
        versions = self._versions.get(name)
        return versions[max(versions)] if versions else None

    def staging_folder(self, name: str) -> Path:
        if not _NAME_PATTERN.match(name):
            raise invalid("name", "adapter names are 1-64 characters of letters, digits, '_', '.', '-'")
        folder = self.adapter_dir / name / f".incoming-{time.time_ns()}"
        folder.mkdir(parents=True)
        return folder

    async def load(
        self,
        name: str,
        folder: Path,
        version: int | None,
        owned: bool,
        check: CanaryCheck | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[AdapterVersion, bool]:
        """Load the adapter in `folder` as the next (or given) version of `name`; return it and
        whether this was a repeat of a load already done (nothing loaded then).

        `owned`: the folder is ours (written from bytes) and is moved, not copied.
        `check`: what the canary must read under these weights (rollout_server.canary).
        """
        started = time.perf_counter()
        if not _NAME_PATTERN.match(name):
            raise invalid("name", "adapter names are 1-64 characters of letters, digits, '_', '.', '-'")
        rank, digest = check_adapter_files(folder, self.max_rank)
        async with self._lock:
            done = self._done_before(name, version, digest, idempotency_key)
            if done is not None:
                return done, True
            previous = self.latest(name)
            if version is None:
                version = previous.version + 1 if previous else 0
            elif previous is not None and version <= previous.version:
                raise RequestError(
                    409, "version", f"version {version} is not above the latest ({previous.version})"
                )
            target = self.adapter_dir / name / f"v{version}"
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            if owned:
                folder.rename(target)
            else:
                target.mkdir()
                for file_name in ADAPTER_FILES:
                    shutil.copyfile(folder / file_name, target / file_name)
            adapter = AdapterVersion(name, version, self._next_lora_id, target, rank, digest)
            self._next_lora_id += 1
            try:
                await self._add(adapter)
                if self.canary:
                    await self._prove_live(adapter, previous, check)
            except BaseException:
                await self._drop(adapter)
                raise
            self._versions.setdefault(name, {})[version] = adapter
            if idempotency_key is not None:
                self._keys[idempotency_key] = (name, digest, adapter)
                while len(self._keys) > REMEMBERED_KEYS:
                    self._keys.popitem(last=False)
            await self._release_unused(name)
        self.swap_seconds.append(time.perf_counter() - started)
        return adapter, False

    def _done_before(
        self, name: str, version: int | None, digest: str, key: str | None
    ) -> AdapterVersion | None:
        """The version an earlier identical load made, if this is a client's retry of it."""
        if key is not None and key in self._keys:
            known_name, known_digest, adapter = self._keys[key]
            if (known_name, known_digest) != (name, digest):
                raise RequestError(
                    409, "Idempotency-Key", "this key was sent with another adapter; use a new key per load"
                )
            return adapter
        loaded = self._versions.get(name, {}).get(version) if version is not None else None
        if loaded is None or (name, version) in self._retired:
            return None
        if loaded.digest != digest:
            raise RequestError(409, "version", f"version {version} of {name!r} is loaded with other weights")
        return loaded

    async def _add(self, adapter: AdapterVersion) -> None:
        try:
            await self.engine.add_lora(adapter.lora_request())
        except RequestError:  # the engine is gone (503)
            raise
        except Exception as error:  # vLLM's worker refused it (shapes of another model); it stays up
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise invalid(
                "adapter", f"does not fit this server's model: vLLM refused it ({reason})"
            ) from None

    async def _prove_live(
        self, adapter: AdapterVersion, previous: AdapterVersion | None, check: CanaryCheck | None
    ) -> None:
        """Run the canary under the new version and under its reference (the previous version when
        loaded, else the base model); refuse (500) a version the canary shows is not the one sent."""
        token_ids = check.token_ids if check is not None else None
        sent = {reference.version: reference for reference in check.references} if check else {}
        # The previous version when loaded (what a load that did not take still serves), unless the
        # sender has numbers only for the base model (a sender that keeps no lineage).
        against = (
            previous if previous is not None and (previous.version in sent or None not in sent) else None
        )
        # Both canaries in one scheduler step: a load that did not take then reads a move of exactly
        # zero even where an engine's numbers depend on what else is batched with a request. The
        # weights are read from disk meanwhile, off the event loop.
        served, served_reference, adapter.served_weights = await asyncio.gather(
            self.engine.canary_logprobs(adapter.lora_request(), token_ids),
            self.engine.canary_logprobs(against.lora_request() if against is not None else None, token_ids),
            asyncio.to_thread(servable_weights, adapter.path, self.engine.lora_dtype),
        )
        if against is None:  # the base model: an inert adapter serves its outputs
            weights: canary.Weights = "same_served" if adapter.served_weights.inert else "changed"
        elif against.served_weights.tensors == adapter.served_weights.tensors:
            weights = "same_tensors"
        else:
            same = adapter.served_weights.served == against.served_weights.served
            weights = "same_served" if same else "changed"
        adapter.canary_reference = against.version if against is not None else None
        try:
            reference = sent.get(adapter.canary_reference)
            adapter.reading = canary.judge(served, served_reference, weights, check, reference)
        except canary.CanaryRefused as refused:
            raise RequestError(500, "adapter", f"version {adapter.version} loaded but {refused}") from None
        adapter.canary_delta = adapter.reading.delta

    def acquire(self, selector: AdapterSelector) -> AdapterVersion | None:
        adapter = self.resolve(selector)
        if adapter is not None:
            adapter.in_flight += 1
        return adapter

    def resolve(self, selector: AdapterSelector) -> AdapterVersion | None:
        """The version a selector names (None: the base model); 404 when none is loaded."""
        if selector.name is None:
            if selector.version is not None:
                raise invalid("adapter.version", "a version needs an adapter name")
            return None
        versions = {
            number: adapter
            for number, adapter in self._versions.get(selector.name, {}).items()
            if (selector.name, number) not in self._retired
        }
        if not versions:
            raise not_found("adapter.name", f"no adapter named {selector.name!r} is loaded")
        version = max(versions) if selector.version is None else selector.version
        adapter = versions.get(version)
        if adapter is None:
            raise not_found(
                "adapter.version",
                f"{selector.name!r} has no loaded version {version} (loaded: {sorted(versions)})",
            )
        return adapter

    async def release(self, adapter: AdapterVersion | None) -> None:
        if adapter is None:
            return
        adapter.in_flight -= 1
        if adapter.in_flight == 0:
            async with self._lock:
                await self._release_unused(adapter.name)

    async def unload(self, name: str, version: int | None) -> list[int]:
        async with self._lock:
            versions = self._versions.get(name)
            if not versions or (version is not None and version not in versions):
                raise not_found(
                    "name",
                    f"no loaded adapter {name!r}" + (f" version {version}" if version is not None else ""),
                )
            chosen = [version] if version is not None else sorted(versions)
            for number in chosen:
                self._retired.add((name, number))
            await self._release_unused(name)
            return chosen

    async def _release_unused(self, name: str) -> None:
        versions = self._versions.get(name, {})
        latest = max(versions) if versions else None
        for number, adapter in list(versions.items()):
            retired = (name, number) in self._retired
            if adapter.in_flight == 0 and (number != latest or retired):
                await self._drop(adapter)
                del versions[number]
                self._retired.discard((name, number))
        if not versions:
            self._versions.pop(name, None)

    async def _drop(self, adapter: AdapterVersion) -> None:
        try:
            await self.engine.remove_lora(adapter.lora_int_id)
        finally:
            shutil.rmtree(adapter.path, ignore_errors=True)

    def listing(self) -> list[AdapterInfo]:
        return [adapter.info() for versions in self._versions.values() for adapter in versions.values()]
