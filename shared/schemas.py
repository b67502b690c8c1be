"""What travels between processes: rollout server, reward worker, trainer, evaluator, driver.

Every message that crosses a process boundary (HTTP or Ray) is one of these pydantic models.
"""

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from shared.chat import CANARY_TOKEN_IDS
from shared.config import StrictModel
from shared.labels import CHEXPERT_LABELS


# ----------------------------------------------------------------------------------------------
# Images and prompts
# ----------------------------------------------------------------------------------------------
class ImageRef(StrictModel):
    """One X-ray: base64 bytes (JPEG, PNG or DICOM) or a path relative to the server's data root."""

    b64: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "ImageRef":
        if (self.b64 is None) == (self.path is None):
            raise ValueError("give exactly one of 'b64' or 'path'")
        return self


class ChatMessage(StrictModel):
    """An OpenAI-style message; `content` is text or a list of parts ({"type": "text"|"image"})."""

    role: Literal["system", "user", "assistant"]
    content: str | list[dict[str, Any]]


# ----------------------------------------------------------------------------------------------
# Rollouts
# ----------------------------------------------------------------------------------------------
class AdapterSelector(StrictModel):
    """Which LoRA adapter serves a request: a name and a version, or the latest version of a name.

    `name=None` serves the base model without an adapter.
    """

    name: str | None = None
    version: int | None = None  # None = latest loaded version


class RolloutItem(StrictModel):
    item_id: str | None = None
    image: ImageRef
    prompt_format: str | None = "reasoning_a"
    messages: list[ChatMessage] | None = None  # raw messages; one user message holds {"type": "image"}

    @model_validator(mode="after")
    def _one_prompt(self) -> "RolloutItem":
        if self.messages is not None:
            self.prompt_format = None
        if self.prompt_format is None and self.messages is None:
            raise ValueError("give 'prompt_format' or 'messages'")
        return self


# Seeds as vLLM takes them (a torch long); a bigger one fails inside the engine.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


class SamplingSettings(StrictModel):
    n: Annotated[int, Field(ge=1)] = 4
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.8  # vLLM's own bounds
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    max_tokens: Annotated[int, Field(ge=1)] = 512
    # vLLM's `min_tokens`: end-of-sequence and stop tokens are masked until this many are generated
    # (load tests and benchmarks that need every completion to run its full length).
    min_tokens: Annotated[int, Field(ge=0)] = 0
    seed: Annotated[int, Field(ge=SEED_MIN, le=SEED_MAX)] | None = None


class RolloutRequest(SamplingSettings):
    items: Annotated[list[RolloutItem], Field(min_length=1)]
    adapter: AdapterSelector = AdapterSelector()


class Completion(StrictModel):
    text: str
    token_ids: list[int]
    logprobs: list[float]  # log-probability of each sampled token under the serving policy
    finish_reason: str | None
    adapter_name: str | None
    adapter_version: int | None  # the version that produced every token of this completion


class RolloutTimings(StrictModel):
    preprocess_s: float = 0.0  # decoding the X-ray and rendering the prompt
    generate_s: float = 0.0  # in the engine, queueing included
    total_s: float = 0.0


class RolloutResult(StrictModel):
    item_id: str | None
    prompt_token_ids: list[int]
    completions: list[Completion]
    timings: RolloutTimings


class RolloutResponse(StrictModel):
    results: list[RolloutResult]


# ----------------------------------------------------------------------------------------------
# Adapters
# ----------------------------------------------------------------------------------------------
class ServerInfo(StrictModel):
    """What a trainer must know to reproduce the server's numbers."""

    model: str
    platform: str  # "cpu" or "cuda"
    vllm_version: str
    max_model_len: int
    max_lora_rank: int
    # The attention backend vLLM chose for the language model, read from the running engine
    # (CPU_ATTN, FLASH_ATTN, TRITON_ATTN, FLEX_ATTENTION, ...).
    attention_backend: str
    # Gemma3 attends bidirectionally among an image's tokens. Of vLLM 0.32's backends only those
    # that implement it (`supports_mm_prefix`: Triton, FlexAttention, FlashAttention 4) do; the CPU
    # backend attends causally, and a trainer must do the same or its logprobs drift from the
    # server's by 1e-3 to 1e-1. Derived from `attention_backend`, never assumed from the platform.
    image_attention: Literal["bidirectional", "causal"]


class AdapterInfo(StrictModel):
    name: str
    version: int
    rank: int
    loaded_at: float
    in_flight: int = 0  # requests still being served by this version
    canary_delta: float | None = None  # max |logprob change| of the canary versus the previous version
    canary_error: float | None = None  # max |served - trainer's| canary logprob, when the trainer sent them
    # What the canary read (rollout_server.canary): the reference it was compared with (a version;
    # None: the base model), the sender's move from it (L2 norm of the logprob changes), and, when
    # that move was above the sender's rounding, the served move projected on it (1: the trained
    # move is live, 0: the weights served did not change) with that projection's standard error.
    canary_reference: int | None = None
    canary_move: float | None = None
    canary_agreement: float | None = None
    canary_agreement_se: float | None = None


class AdapterList(StrictModel):
    adapters: list[AdapterInfo]


class CanaryReference(StrictModel):
    """The sender's canary logprobs under weights the server may hold: a version of the same adapter
    name, or (None) the base model."""

    version: int | None
    logprobs: list[float]


class CanaryCheck(StrictModel):
    """What the server must read before it reports a version live (rollout_server.canary).

    `token_ids`: a text-only prompt (default shared.chat.CANARY_TOKEN_IDS); `expected`: the sender's
    logprob of each token after the ones before it under these weights (one fewer than the ids);
    `tolerance`: the largest |served - expected| accepted per token; `references`: the same
    logprobs under weights the server holds, so it can check that the served weights moved from
    those as the sender's did; `resolution`: the sender's own per-token rounding error (RMS; about
    3e-2 in bf16, 0 when exact), below which its move says nothing."""

    token_ids: Annotated[list[int], Field(min_length=2, max_length=4096)] | None = None
    expected: Annotated[list[float], Field(min_length=1)]
    tolerance: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 1e-3
    references: Annotated[list[CanaryReference], Field(max_length=8)] = []
    resolution: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0

    @model_validator(mode="after")
    def _lengths(self) -> "CanaryCheck":
        ids = len(self.token_ids) if self.token_ids is not None else len(CANARY_TOKEN_IDS)
        if len(self.expected) != ids - 1:
            raise ValueError(
                f"expected holds {len(self.expected)} logprobs for {ids} token ids (want one fewer)"
            )
        for reference in self.references:
            if len(reference.logprobs) != len(self.expected):
                raise ValueError(
                    f"reference {reference.version} holds {len(reference.logprobs)} logprobs, expected {len(self.expected)}"
                )
        return self


class AdapterUpdate(StrictModel):
    """LoRA weights only, as the trainer publishes them after an optimizer step."""

    name: str
    version: int | None = None  # None: the server assigns the next version
    safetensors: bytes  # peft's adapter_model.safetensors
    adapter_config: dict[str, Any]  # peft's adapter_config.json
    # What the server must read before it reports the version live. Without it the server falls
    # back to requiring a change from the previous version's canary.
    canary: CanaryCheck | None = None


# ----------------------------------------------------------------------------------------------
# Rewards
# ----------------------------------------------------------------------------------------------
class RewardItem(StrictModel):
    text: str
    n_tokens: int
    labels: list[str]  # ground truth, CheXpert label names
    # Labels the `drop` uncertainty policy masked out for this X-ray: a reward must neither credit
    # nor charge them (the hard reward's Jaccard and the label counts leave them out).
    masked: list[str] = []
    metadata: dict[str, Any] = {}

    @model_validator(mode="after")
    def _known_labels(self) -> "RewardItem":
        unknown = sorted((set(self.labels) | set(self.masked)) - set(CHEXPERT_LABELS))
        if unknown:
            raise ValueError(f"unknown ground-truth label(s) {unknown}")
        return self


class RewardRequest(StrictModel):
    batch_id: str
    items: list[RewardItem]
    state: dict[str, Any] | None = None  # the reward's carried state (e.g. the nuanced window)


class LabelCounts(StrictModel):
    tp: int = 0
    fp: int = 0
    fn: int = 0


class RewardResult(StrictModel):
    batch_id: str
    reward_name: str
    reward_version: str
    # The reward's declared scale: the trainer multiplies `totals` by it before taking advantages.
    scale: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1.0
    totals: list[float]
    components: list[dict[str, float]]
    label_counts: dict[str, LabelCounts]
    state: dict[str, Any] | None = None
