"""POST /v1/chat/completions as OpenAI defines it (and vLLM serves it), narrowed to what a chest X-ray
server does: one image per request, sent as a base64 data URI. The request model, its conversion to
our prompt and sampling, and the checks that name the field at fault."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rollout_server.errors import RequestError, invalid
from rollout_server.inputs import ImageInput, PromptInput
from shared.schemas import SEED_MAX, SEED_MIN, AdapterSelector, ImageRef

TOP_LOGPROBS_MAX = 20  # OpenAI's bound


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")  # `name` and the like change nothing here

    # "developer" is OpenAI's newer name for "system"; tool and function turns have no place here.
    role: Literal["system", "developer", "user", "assistant"]
    content: Any = None  # text or a list of parts; checked part by part in `split_image`


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields this server has no use for

    model: str | None = None
    messages: list[ChatMessageIn] = Field(min_length=1)
    n: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # vLLM's bounds
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # vLLM's extensions of the OpenAI request, as its own server takes them (load tests use them to
    # make every completion run its full length).
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def check_chat_request(request: ChatCompletionRequest, max_n: int, max_model_len: int) -> None:
    if request.top_logprobs is not None:
        if not request.logprobs:
            raise invalid("top_logprobs", "top_logprobs needs logprobs=true")
        if request.top_logprobs > TOP_LOGPROBS_MAX:
            raise invalid("top_logprobs", f"top_logprobs={request.top_logprobs} is over {TOP_LOGPROBS_MAX}")
    if request.n > max_n:
        raise invalid("n", f"n={request.n} is over the limit of {max_n}")
    limit = request.completion_limit
    if limit is not None and limit >= max_model_len:
        raise invalid("max_tokens", f"max_tokens={limit} is not below max_model_len={max_model_len}")
    if limit is not None and request.min_tokens > limit:
        raise invalid("min_tokens", f"min_tokens={request.min_tokens} is over max_tokens={limit}")


def split_image(messages: list[ChatMessageIn]) -> PromptInput:
    """The single image_url data URI out of the messages (an image placeholder left in its place),
    the messages in the chat template's form."""
    image: ImageInput | None = None
    converted: list[dict[str, Any]] = []
    for m_index, message in enumerate(messages):
        field = f"messages[{m_index}].content"
        content = message.content
        if isinstance(content, list):
            parts = []
            for p_index, part in enumerate(content):
                part_field = f"{field}[{p_index}]"
                if not isinstance(part, dict):
                    raise invalid(part_field, "a content part is an object with a 'type'")
                kind = part.get("type")
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise invalid(f"{part_field}.text", "a text part needs 'text' as a string")
                    parts.append({"type": "text", "text": part["text"]})
                elif kind == "image_url":
                    url_field = f"{part_field}.image_url.url"
                    if image is not None:
                        raise invalid(url_field, "one image per request")
                    image = ImageInput(ImageRef(b64=_data_uri_payload(part, url_field)), url_field, url_field)
                    parts.append({"type": "image"})
                else:
                    raise invalid(
                        f"{part_field}.type",
                        f"unsupported content part type {kind!r} (use 'text' or 'image_url')",
                    )
            content = parts
        elif not isinstance(content, str):
            raise invalid(field, "content is a string or a list of parts")
        role = "system" if message.role == "developer" else message.role
        converted.append({"role": role, "content": content})
    if image is None:
        raise invalid("messages", "no image_url part; this server reads chest X-rays")
    return PromptInput(item_id=None, image=image, messages=converted, messages_field="messages")


def _data_uri_payload(part: dict[str, Any], field: str) -> str:
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise invalid(field, "only base64 data URIs (data:image/...;base64,...) are accepted")
    return url.split(";base64,", 1)[1]


def model_selector(model: str | None, served_name: str) -> AdapterSelector:
    """OpenAI's `model`: the served model name (or "base", or nothing) for the base model, "NAME" for
    an adapter's latest version, "NAME:VERSION" for one version."""
    if not model or model in ("base", served_name):
        return AdapterSelector()
    if ":" not in model:
        return AdapterSelector(name=model)
    name, _, version = model.rpartition(":")
    if not version.isdigit():
        raise RequestError(404, "model", f"no model {model!r} (adapters are NAME or NAME:VERSION)")
    return AdapterSelector(name=name, version=int(version))


def sampling_params(request: ChatCompletionRequest, logit_bias: dict[int, float]) -> Any:
    # vLLM (seconds to import) loads in the server process only, not where replicas are placed
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    return SamplingParams(
        output_kind=RequestOutputKind.DELTA if request.stream else RequestOutputKind.FINAL_ONLY,
        n=request.n,
        temperature=request.temperature,
        top_p=request.top_p,
        max_tokens=request.completion_limit,  # None: up to the model's length, as vLLM does
        min_tokens=request.min_tokens,
        ignore_eos=request.ignore_eos,
        stop=stop or None,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        seed=request.seed,
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        logit_bias=logit_bias or None,  # never an image placeholder (see RolloutService)
    )
