"""POST /v1/chat/completions, OpenAI-compatible (see rollout_server/openai_api.py for what is
accepted): `model` is the served model name or "base" for the base model, "NAME" for an adapter's
latest version, "NAME:VERSION" for one version. `stream=true` answers server-sent events."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse

from rollout_server.errors import RequestError, invalid
from rollout_server.inputs import PreparedPrompt, prepare_prompts
from rollout_server.openai_api import (
    ChatCompletionRequest,
    check_chat_request,
    model_selector,
    sampling_params,
    split_image,
)
from rollout_server.openai_responses import DONE, ChatAnswer, event, usage
from rollout_server.routers.dependencies import ReadyService, require_token
from rollout_server.service import RolloutService
from shared.schemas import AdapterSelector

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_token)])


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, service: ReadyService
) -> JSONResponse | StreamingResponse:
    config = service.config
    check_chat_request(body, config.limits.max_n, config.engine.max_model_len)
    selector = model_selector(body.model, config.model_name)
    with_model_field(lambda: service.adapters.resolve(selector))  # an unknown model: 404 before any work
    prompt_input = split_image(body.messages)
    prompt = (
        await asyncio.to_thread(
            prepare_prompts,
            [prompt_input],
            service.processor,
            service.prompts,
            config.data_root,
            config.limits,
            "messages",
        )
    )[0]
    params = sampling_params(body, service.placeholder_bias)
    answer = ChatAnswer(
        body.model or config.model_name,
        (body.top_logprobs or 0) if body.logprobs else None,
        service.processor.tokenizer,
    )
    if body.stream:
        stream = _stream(service, selector, prompt, params, answer, body.include_usage)
        return StreamingResponse(stream, media_type="text/event-stream")
    output = await _generate(service, selector, prompt, params)
    return JSONResponse(answer.completion(output))


def count(service: RolloutService, prompt_tokens: int, completion_tokens: int, completions: int) -> None:
    service.metrics.completions.inc(completions)
    service.metrics.tokens.inc(completion_tokens)
    service.metrics.prompt_tokens.inc(prompt_tokens)


def with_model_field(call):
    """Adapter lookups name `adapter.name`/`adapter.version`; through this API the field is `model`."""
    try:
        return call()
    except RequestError as error:
        raise RequestError(error.status, "model", error.reason) from None


async def _generate(
    service: RolloutService, selector: AdapterSelector, prompt: PreparedPrompt, params: Any
) -> Any:
    # vLLM (seconds to import) loads in the server process only, not where replicas are placed
    from vllm.exceptions import VLLMValidationError

    adapter = with_model_field(lambda: service.adapters.acquire(selector))
    service.metrics.queue_depth.inc()
    try:
        output = await service.engine.generate(
            prompt.engine_input(), params, adapter.lora_request() if adapter else None
        )
    except (ValueError, VLLMValidationError) as error:  # e.g. a prompt too long for max_tokens
        raise invalid("messages", str(error).splitlines()[0]) from None
    finally:
        service.metrics.queue_depth.dec()
        await service.adapters.release(adapter)
    count(
        service,
        len(output.prompt_token_ids),
        sum(len(c.token_ids) for c in output.outputs),
        len(output.outputs),
    )
    return output


async def _stream(
    service: RolloutService,
    selector: AdapterSelector,
    prompt: PreparedPrompt,
    params: Any,
    answer: ChatAnswer,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The adapter is held from the first event to the last (or to the client's hang-up: the
    generator is cancelled, vLLM aborts the request)."""
    # vLLM (seconds to import) loads in the server process only, not where replicas are placed
    from vllm.exceptions import VLLMValidationError

    try:
        adapter = with_model_field(lambda: service.adapters.acquire(selector))
    except RequestError as error:  # unloaded since the request was checked
        yield event(error.body())
        yield DONE
        return
    service.metrics.queue_depth.inc()
    prompt_tokens = completion_tokens = 0
    try:
        yield answer.role_chunk(params.n, include_usage)
        async for output in service.engine.stream(
            prompt.engine_input(), params, adapter.lora_request() if adapter else None
        ):
            prompt_tokens = len(output.prompt_token_ids or []) or prompt_tokens
            completion_tokens += sum(len(choice.token_ids) for choice in output.outputs)
            yield answer.delta_chunk(output, include_usage)
        if include_usage:
            yield answer.chunk([], True, usage(prompt_tokens, completion_tokens))
        count(service, prompt_tokens, completion_tokens, params.n)
    except (ValueError, VLLMValidationError) as error:
        yield event(invalid("messages", str(error).splitlines()[0]).body())
    except RequestError as error:  # the engine died mid-stream: 503 in the event
        yield event(error.body())
    finally:
        service.metrics.queue_depth.dec()
        await service.adapters.release(adapter)
    yield DONE
