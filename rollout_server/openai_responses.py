"""OpenAI's answer shapes from vLLM's outputs: `chat.completion`, the `chat.completion.chunk` events of
a stream, `logprobs.content` with `top_logprobs`, and `usage`."""

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

LOGPROB_FLOOR = -9999.0  # -inf is not JSON; vLLM's server clamps the same way


def token_text(token_id: int, logprob: Any, tokenizer: Any) -> str:
    text = getattr(logprob, "decoded_token", None)
    return text if text is not None else tokenizer.decode([token_id])


def _entry(token_id: int, logprob: Any, tokenizer: Any) -> dict[str, Any]:
    text = token_text(token_id, logprob, tokenizer)
    return {
        "token": text,
        "logprob": max(logprob.logprob, LOGPROB_FLOOR),
        "bytes": list(text.encode("utf-8")),
    }


def logprobs_content(
    token_ids: list[int], steps: list[dict[int, Any]], top: int, tokenizer: Any
) -> list[dict]:
    """OpenAI's `logprobs.content`: per sampled token its logprob, and the `top` most likely tokens at
    that position, most likely first (vLLM adds the sampled token to its top-k when it is not among
    them; OpenAI lists only the top-k)."""
    content = []
    for token_id, step in zip(token_ids, steps, strict=True):
        best = sorted(
            ((tid, lp) for tid, lp in step.items() if lp.rank is not None and lp.rank <= top),
            key=lambda p: p[1].rank,
        )
        content.append(
            {
                **_entry(token_id, step[token_id], tokenizer),
                "top_logprobs": [_entry(t, lp, tokenizer) for t, lp in best],
            }
        )
    return content


@dataclass
class ChatAnswer:
    """What every chunk and the final answer share: the id, the creation time, the model name."""

    model: str
    top_logprobs: int | None  # None: no logprobs asked for
    tokenizer: Any
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _logprobs(self, choice: Any) -> dict[str, Any] | None:
        if self.top_logprobs is None or choice.logprobs is None:
            return None
        return {
            "content": logprobs_content(
                list(choice.token_ids), choice.logprobs, self.top_logprobs, self.tokenizer
            )
        }

    def completion(self, output: Any) -> dict[str, Any]:
        choices = sorted(output.outputs, key=lambda choice: choice.index)
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": choice.index,
                    "message": {"role": "assistant", "content": choice.text},
                    "finish_reason": choice.finish_reason,
                    "logprobs": self._logprobs(choice),
                }
                for choice in choices
            ],
            "usage": usage(len(output.prompt_token_ids), sum(len(c.token_ids) for c in choices)),
        }

    def chunk(self, choices: list[dict[str, Any]], with_usage: bool, usage_now: dict | None = None) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if with_usage:
            body["usage"] = usage_now
        return event(body)

    def role_chunk(self, n: int, with_usage: bool) -> str:
        choices = [
            {
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            for i in range(n)
        ]
        return self.chunk(choices, with_usage)

    def delta_chunk(self, output: Any, with_usage: bool) -> str:
        choices = [
            {
                "index": choice.index,
                "delta": {"content": choice.text},
                "logprobs": self._logprobs(choice),
                "finish_reason": choice.finish_reason,
            }
            for choice in sorted(output.outputs, key=lambda choice: choice.index)
        ]
        return self.chunk(choices, with_usage)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"
