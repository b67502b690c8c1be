"""Evaluation through the rollout server: every dataset through every checkpoint (the base model
and/or LoRA adapters) over HTTP, read by the shared parser, scored by the evaluation modules, with
the shortcut baselines beside. `cxr-rl eval` and the GRPO driver (every K steps) both call
`evaluate_checkpoints`.

Images travel as base64 (no filesystem shared with the server), several per request and several
requests in flight, so the engine batches them. An adapter asked for without a version is pinned to
the version loaded when the evaluation starts: one checkpoint's numbers never mix two versions.
"""

import base64
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, field_validator
from tqdm import tqdm

from evaluation.baselines import BlankImageAnswer, dataset_baselines, training_prevalence
from evaluation.blank import blank_xray_png, typical_image_size
from evaluation.datasets import DatasetSpec, LoadedDataset, load_dataset
from evaluation.outcome import EvaluationOutcome, EvaluationTiming
from evaluation.records import PredictionRecord
from rewards.parsing import ParserConfig, ParseResult, parse_completion
from rollout_server.client import RolloutClient, RolloutServerError
from shared.config import StrictModel
from shared.errors import UserError
from shared.manifest import read_manifest
from shared.schemas import AdapterSelector, AdapterUpdate, ImageRef, RolloutItem, RolloutRequest

BASE_CHECKPOINT = "base"
_ITEM_FIELD = re.compile(r"^items\[(\d+)\]")


class EvalSampling(StrictModel):
    greedy: bool = Field(True, description="temperature 0: one deterministic answer per image")
    temperature: float = Field(1.0, gt=0.0, description="sampling only")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="sampling only")
    seed: int = Field(0, ge=0, description="sampling only: image i of a dataset is drawn with seed + i")
    max_tokens: int = Field(512, ge=1)
    prompt_format: str = "reasoning_a"

    def request_fields(self, first_index: int) -> dict[str, Any]:
        if self.greedy:
            return {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": self.max_tokens, "seed": None}
        return {
            "n": 1,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed + first_index,  # the server adds each item's index within the request
        }


class EvalSettings(StrictModel):
    sampling: EvalSampling = EvalSampling()
    parser: ParserConfig = ParserConfig()
    batch_size: int = Field(8, ge=1, description="images per request")
    concurrency: int = Field(4, ge=1, description="requests in flight")
    in_distribution: list[str] = Field(
        [], description="default: the first dataset not named out of distribution"
    )
    out_of_distribution: list[str] | None = Field(
        None, description="default: the first other dataset scored on an NIH label set, if any"
    )
    train_manifest: Path | None = Field(
        None, description="the prevalence baselines' labels; None: the in-distribution set's own"
    )
    baseline_seed: int = Field(0, description="seed of the sampled prevalence baseline")
    timeout_s: float = Field(600.0, gt=0.0, description="seconds per request, when given a URL")
    progress: bool = True

    @field_validator("in_distribution", "out_of_distribution", mode="before")
    @classmethod
    def _one_or_many(cls, names: Any) -> Any:
        return [names] if isinstance(names, str) else names


Checkpoint = AdapterSelector | None  # None (or a selector without a name): the base model


def checkpoint_name(checkpoint: Checkpoint) -> str:
    if checkpoint is None or checkpoint.name is None:
        return BASE_CHECKPOINT
    return checkpoint.name if checkpoint.version is None else f"{checkpoint.name}:{checkpoint.version}"


def parse_checkpoint(text: str) -> Checkpoint:
    """`base`, `NAME` (its latest version) or `NAME:VERSION`."""
    if text == BASE_CHECKPOINT:
        return None
    name, colon, version = text.partition(":")
    if not name or (colon and not version.isdigit()):
        raise UserError(f"checkpoint {text!r}: expected base, NAME or NAME:VERSION (a whole number)")
    return AdapterSelector(name=name, version=int(version) if colon else None)


def match_checkpoint(text: str, checkpoints: Sequence[Checkpoint]) -> Checkpoint:
    """The one checkpoint among `checkpoints` that `text` (base, NAME or NAME:VERSION) names; an
    unpinned NAME in `checkpoints` matches any version."""
    wanted = parse_checkpoint(text)
    matches = [
        checkpoint
        for checkpoint in checkpoints
        if checkpoint_name(checkpoint) == text
        or (
            wanted is not None
            and checkpoint is not None
            and checkpoint.name == wanted.name
            and None in (wanted.version, checkpoint.version)
        )
    ]
    if len(matches) != 1:
        names = [checkpoint_name(checkpoint) for checkpoint in checkpoints]
        problem = "matches none" if not matches else "is ambiguous"
        raise UserError(f"checkpoint {text!r} {problem} of the evaluated checkpoints {names}")
    return matches[0]


def pin_checkpoints(client: RolloutClient, checkpoints: Sequence[Checkpoint]) -> list[Checkpoint]:
    """Each adapter at a loaded version (the latest when none is asked for); the base stays None."""
    if not checkpoints:
        raise UserError("name at least one checkpoint: the base model and/or an adapter")
    loaded: dict[str, list[int]] | None = None
    pinned: list[Checkpoint] = []
    for checkpoint in checkpoints:
        if checkpoint is None or checkpoint.name is None:
            pinned.append(None)
            continue
        if loaded is None:
            try:
                listing = client.adapters()
            except (RolloutServerError, httpx.TransportError) as error:
                raise server_error(client, error, "listing the loaded adapters") from None
            loaded = {}
            for info in listing:
                loaded.setdefault(info.name, []).append(info.version)
        versions = sorted(loaded.get(checkpoint.name, []))
        if not versions:
            raise UserError(
                f"no adapter named {checkpoint.name!r} is loaded on {client.base_url} "
                f"(loaded: {sorted(loaded) or 'none'})"
            )
        version = versions[-1] if checkpoint.version is None else checkpoint.version
        if version not in versions:
            raise UserError(
                f"adapter {checkpoint.name!r} has no loaded version {version} (loaded: {versions})"
            )
        pinned.append(AdapterSelector(name=checkpoint.name, version=version))
    names = [checkpoint_name(checkpoint) for checkpoint in pinned]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"checkpoint(s) {repeated} named more than once")
    return pinned


class UnreachableServer(UserError):
    """The rollout server did not answer at all (down, restarting, wrong address): worth a retry
    by a caller that can bring it back, unlike a refusal."""


def server_error(client: RolloutClient, error: Exception, where: str = "") -> UserError:
    """A refusal or a network failure as a one-line error naming the server (and where it struck)."""
    prefix = f"{where}: " if where else ""
    if isinstance(error, RolloutServerError):
        if error.status == 401:
            return UserError(f"{client.base_url} refused the API token (give the right one with --token)")
        message = f"{prefix}{client.base_url} answered {error.status}: {error.field}: {error.reason}"
        # 503: not serving right now (its engine loading, or dead and the server going down)
        return UnreachableServer(message) if error.status == 503 else UserError(message)
    return UnreachableServer(f"{prefix}cannot reach the rollout server at {client.base_url} ({error})")


def load_adapter_folder(client: RolloutClient, name: str, folder: str | Path) -> AdapterSelector:
    """Send a PEFT adapter folder's files to the server as the next version of `name` (as bytes:
    the server need not see this machine's files) and return that version."""
    folder = Path(folder)
    config_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise UserError(f"adapter {name!r}: {path} not found (expected a PEFT adapter folder)")
    try:
        adapter_config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{config_path}: not valid JSON ({error.msg})") from None
    update = AdapterUpdate(name=name, safetensors=weights_path.read_bytes(), adapter_config=adapter_config)
    try:
        info = client.load_adapter(update)
    except (RolloutServerError, httpx.TransportError) as error:
        raise server_error(client, error, f"loading adapter {name!r} from {folder}") from None
    return AdapterSelector(name=info.name, version=info.version)


@dataclass(frozen=True)
class _Batch:
    checkpoint: str
    adapter: AdapterSelector
    dataset: LoadedDataset
    start: int
    stop: int


def _image_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def parse_status(parsed: ParseResult) -> str:
    if parsed.problems and not parsed.valid:
        return "; ".join(parsed.problems)
    if not parsed.labels:
        return "no label in the answer" + (f" (unrecognised: {parsed.invalid[:3]})" if parsed.invalid else "")
    return "ok"


def _answer_batch(client: RolloutClient, batch: _Batch, settings: EvalSettings) -> list[PredictionRecord]:
    dataset, sampling = batch.dataset, settings.sampling
    records = dataset.records[batch.start : batch.stop]
    items = [
        RolloutItem(
            item_id=record.id, image=ImageRef(b64=_image_b64(path)), prompt_format=sampling.prompt_format
        )
        for record, path in zip(records, dataset.image_paths[batch.start : batch.stop], strict=True)
    ]
    request = RolloutRequest(items=items, adapter=batch.adapter, **sampling.request_fields(batch.start))
    try:
        response = client.rollouts(request)
    except (RolloutServerError, httpx.TransportError) as error:
        raise server_error(client, error, _batch_place(batch, error)) from None
    predictions = []
    for index, (record, result) in enumerate(zip(records, response.results, strict=True), start=batch.start):
        completion = result.completions[0]
        parsed = parse_completion(completion.text, settings.parser)
        predictions.append(
            PredictionRecord(
                image_id=record.id,
                dataset=dataset.name,
                checkpoint=batch.checkpoint,
                text=completion.text,
                truth=dataset.truths[index],
                masked=dataset.masks[index],
                pred=parsed.labels,
                valid=parsed.valid and bool(parsed.labels),  # no label fails too: counted, not dropped
                parse_status=parse_status(parsed),
                metadata={
                    "image": record.image,
                    "source": record.source,
                    "finish_reason": completion.finish_reason,
                    "completion_tokens": len(completion.token_ids),
                    "completion_logprob": sum(completion.logprobs),  # under the serving checkpoint
                    "adapter_version": completion.adapter_version,
                },
            )
        )
    return predictions


def _batch_place(batch: _Batch, error: Exception) -> str:
    place = f"dataset {batch.dataset.name!r}, checkpoint {batch.checkpoint}"
    match = _ITEM_FIELD.match(getattr(error, "field", ""))
    if match and batch.start + int(match.group(1)) < batch.stop:
        index = batch.start + int(match.group(1))
        place += f", image {batch.dataset.records[index].id!r} ({batch.dataset.image_paths[index]})"
    return place


def _answer_blank(
    client: RolloutClient,
    checkpoint: str,
    adapter: AdapterSelector,
    size: tuple[int, int],
    settings: EvalSettings,
) -> BlankImageAnswer:
    sampling = settings.sampling
    item = RolloutItem(
        item_id="blank",
        image=ImageRef(b64=base64.b64encode(blank_xray_png(*size)).decode()),
        prompt_format=sampling.prompt_format,
    )
    request = RolloutRequest(items=[item], adapter=adapter, **sampling.request_fields(0))
    try:
        completion = client.rollouts(request).results[0].completions[0]
    except (RolloutServerError, httpx.TransportError) as error:
        raise server_error(client, error, f"blank image, checkpoint {checkpoint}") from None
    parsed = parse_completion(completion.text, settings.parser)
    return BlankImageAnswer(
        text=completion.text,
        pred=parsed.labels,
        valid=parsed.valid and bool(parsed.labels),
        parse_status=parse_status(parsed),
        width=size[0],
        height=size[1],
    )


def _roles(datasets: Mapping[str, LoadedDataset], settings: EvalSettings) -> tuple[list[str], list[str]]:
    names = list(datasets)
    named_ood = settings.out_of_distribution or []
    in_distribution = settings.in_distribution or [name for name in names if name not in named_ood][:1]
    out_of_distribution = settings.out_of_distribution
    if out_of_distribution is None:
        nih = [n for n in names if n not in in_distribution and datasets[n].label_set.startswith("nih")]
        out_of_distribution = nih[:1]
    for role, chosen in (("in-distribution", in_distribution), ("out-of-distribution", out_of_distribution)):
        for name in chosen:
            if name not in datasets:
                raise UserError(f"{role} dataset {name!r} is not one of the datasets {names}")
    both = sorted(set(in_distribution) & set(out_of_distribution))
    if both:
        raise UserError(f"{both[0]!r} cannot be both an in- and an out-of-distribution dataset")
    return list(in_distribution), list(out_of_distribution)


def _prevalence(settings: EvalSettings, id_dataset: LoadedDataset) -> tuple[dict[str, float], str]:
    if settings.train_manifest is not None:
        training = read_manifest(settings.train_manifest)
        if not training:
            raise UserError(f"training manifest {settings.train_manifest} lists no images")
        prevalence = training_prevalence(record.labels for record in training)
        return prevalence, f"the training manifest {settings.train_manifest.name} ({len(training)} images)"
    source = (
        f"the in-distribution set {id_dataset.name!r} itself ({len(id_dataset.truths)} images; no training "
        "manifest given, so these baselines know the test labels' rates: an optimistic stand-in)"
    )
    return training_prevalence(id_dataset.truths), source


def _run_all(jobs: list[tuple[int, Callable[[], Any]]], settings: EvalSettings) -> list[Any]:
    """Run (images, job) pairs `concurrency` at a time with a progress bar; results in job order.
    On the first failure the jobs not yet started are cancelled."""
    results: list[Any] = [None] * len(jobs)
    with (
        ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="eval") as pool,
        tqdm(
            total=sum(n for n, _ in jobs), unit="image", desc="evaluating", disable=not settings.progress
        ) as bar,
    ):
        futures: dict[Future, int] = {pool.submit(job): index for index, (_, job) in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                results[index] = future.result()
                bar.update(jobs[index][0])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


def evaluate_checkpoints(
    client_or_url: RolloutClient | str,
    datasets: Mapping[str, DatasetSpec],
    checkpoints: Sequence[Checkpoint],
    settings: EvalSettings = EvalSettings(),  # noqa: B008 (pydantic models are not mutated here)
    token: str | None = None,
) -> EvaluationOutcome:
    """Every dataset (name -> (manifest, label set or None)) through every checkpoint (None: the
    base model), plus each checkpoint's answer on a blank image per dataset; scored and ready for
    a report. `token` is used only when a URL is given."""
    if not datasets:
        raise UserError("name at least one dataset to evaluate")
    loaded = {name: load_dataset(name, spec) for name, spec in datasets.items()}
    in_distribution, out_of_distribution = _roles(loaded, settings)
    prevalence, prevalence_source = _prevalence(settings, loaded[(in_distribution or list(loaded))[0]])
    sizes = {name: typical_image_size(dataset.image_paths) for name, dataset in loaded.items()}
    client = (
        RolloutClient(client_or_url, token, settings.timeout_s)
        if isinstance(client_or_url, str)
        else client_or_url
    )
    try:
        pinned = pin_checkpoints(client, checkpoints)
        names = [checkpoint_name(checkpoint) for checkpoint in pinned]
        started = time.perf_counter()
        blank_keys, jobs = [], []
        for name, checkpoint in zip(names, pinned, strict=True):
            adapter = checkpoint or AdapterSelector()
            for dataset in loaded.values():  # blank images first: a wrong adapter or prompt fails at once
                blank_keys.append((name, dataset.name))
                jobs.append((1, partial(_answer_blank, client, name, adapter, sizes[dataset.name], settings)))
        for name, checkpoint in zip(names, pinned, strict=True):
            for dataset in loaded.values():
                for start in range(0, len(dataset.records), settings.batch_size):
                    batch = _Batch(name, checkpoint or AdapterSelector(), dataset, start,
                                   min(start + settings.batch_size, len(dataset.records)))  # fmt: skip
                    jobs.append((batch.stop - batch.start, partial(_answer_batch, client, batch, settings)))
        results = _run_all(jobs, settings)
        seconds = time.perf_counter() - started
    finally:
        if isinstance(client_or_url, str):
            client.close()
    blank_answers = dict(zip(blank_keys, results[: len(blank_keys)], strict=True))
    records: dict[str, dict[str, list[PredictionRecord]]] = {name: {} for name in names}
    for batch_records in results[len(blank_keys) :]:
        for record in batch_records:
            records[record.checkpoint].setdefault(record.dataset, []).append(record)
    return EvaluationOutcome.from_records(
        records=records,
        datasets={name: dataset.label_set for name, dataset in loaded.items()},
        in_distribution=in_distribution,
        out_of_distribution=out_of_distribution,
        baselines={
            name: dataset_baselines(
                dataset.truths,
                dataset.label_set,
                prevalence,
                prevalence_source,
                {checkpoint: blank_answers[(checkpoint, name)] for checkpoint in names},
                settings.baseline_seed,
            )
            for name, dataset in loaded.items()
        },
        timing=EvaluationTiming.measure(records, seconds),
    )
