"""The wire: where a load is sent and how one streaming request is written and its stream read.

``Target`` names the server (base URL, protocol, model name, how the output length is fixed);
each protocol writes a request's JSON body and parses one stream event: ``openai`` (the
``/v1/completions`` endpoint of vLLM and ``transformers serve``) and ``tgi`` (Text Generation
Inference's ``/generate_stream``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yarl import URL

from joulebench.serving.request import Request


@dataclass(frozen=True)
class Event:
    """One parsed stream event: new tokens it carries, the server's final count, an error."""

    tokens: int = 0
    final_tokens: int | None = None
    done: bool = False
    error: str | None = None


class OpenAICompletions:
    """OpenAI-compatible ``/v1/completions`` with ``stream: true`` (vLLM, transformers serve)."""

    name = "openai"
    path = "/v1/completions"

    def body(self, model: str, req: Request, control: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "prompt": req.prompt,
            "max_tokens": req.output_len,
            "temperature": 0.0,
            "stream": True,
        }
        n = req.output_len
        if control == "min_tokens":  # vLLM's extensions: exactly n tokens
            body |= {"min_tokens": n, "ignore_eos": True, "stream_options": {"include_usage": True}}
        elif control == "generation_config":  # transformers serve: a whole GenerationConfig
            config = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
            body["generation_config"] = json.dumps(config)
        return body

    def parse(self, data: str) -> Event:
        if data == "[DONE]":
            return Event(done=True)
        payload = json.loads(data)
        if "error" in payload:
            return Event(error=str(payload["error"]), done=True)
        tokens = sum(1 for c in payload.get("choices") or [] if c.get("text"))
        usage = payload.get("usage") or {}
        return Event(tokens=tokens, final_tokens=usage.get("completion_tokens"))


class TgiGenerateStream:
    """Text Generation Inference ``/generate_stream``: one SSE event per token."""

    name = "tgi"
    path = "/generate_stream"

    def body(self, model: str, req: Request, control: str) -> dict[str, Any]:
        # TGI has no minimum length: a model may stop early at EOS; tokens are counted as sent
        params = {"max_new_tokens": req.output_len, "do_sample": False, "details": True}
        return {"inputs": req.prompt, "parameters": params}

    def parse(self, data: str) -> Event:
        payload = json.loads(data)
        if "error" in payload:
            return Event(error=str(payload["error"]), done=True)
        tokens = 1 if payload.get("token") else 0
        details = payload.get("details") or {}
        done = payload.get("generated_text") is not None
        return Event(tokens=tokens, final_tokens=details.get("generated_tokens"), done=done)


PROTOCOLS: dict[str, Callable[[], OpenAICompletions | TgiGenerateStream]] = {
    "openai": OpenAICompletions,
    "tgi": TgiGenerateStream,
}


@dataclass(frozen=True)
class Target:
    """Where and how to send: base URL, protocol, model name, how output length is fixed.

    ``output_control``: ``min_tokens`` (vLLM: min_tokens + ignore_eos), ``generation_config``
    (transformers serve: min_new_tokens), or ``none`` (max length only).
    """

    url: str
    protocol: str = "openai"
    model: str = ""
    output_control: str = "none"


def encode_body(target: Target, req: Request) -> bytes:
    """The request's JSON body as bytes, in the target's protocol."""
    proto = PROTOCOLS[target.protocol]()
    return json.dumps(proto.body(target.model, req, target.output_control)).encode()


def endpoint(target: Target) -> URL:
    """The URL requests go to, parsed once."""
    return URL(target.url.rstrip("/") + PROTOCOLS[target.protocol].path)
