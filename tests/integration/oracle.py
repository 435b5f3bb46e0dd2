"""Both clients on the same bytes: openai2 and the official ``openai`` SDK read one stream each
from the same FakeServer and report what they assembled, in one comparable shape."""
from __future__ import annotations

import json
import os
import random

from tests.integration.support import CORPUS

MESSAGES = [{"role": "user", "content": "oracle"}]


def frame_jsonl(raw: bytes) -> bytes:
    """A PAYLOAD-ONLY corpus file (one JSON per line) framed as SSE, with [DONE]."""
    out = []
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            out.append("data: %s\n\n" % line)
    out.append("data: [DONE]\n\n")
    return "".join(out).encode("utf-8")


def corpus_streams() -> dict:
    """{relative name: SSE body bytes} for every streaming body of the wire corpus."""
    found = {}
    for folder, _, files in os.walk(CORPUS):
        for name in sorted(files):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, CORPUS).replace(os.sep, "/")
            if name.endswith(".sse"):
                with open(path, "rb") as fh:
                    found[rel] = fh.read()
            elif name.endswith(".jsonl"):
                with open(path, "rb") as fh:
                    found[rel] = frame_jsonl(fh.read())
    return dict(sorted(found.items()))


def _norm_calls(calls) -> list:
    out = []
    for c in calls or []:
        fn = c.get("function") or {}
        out.append({"id": c.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")})
    return out


def run_openai2(client, model: str) -> dict:
    result = {"error": None}
    stream = None
    try:
        stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
        for _ in stream.iter_dicts():
            pass
    except Exception as exc:  # noqa: BLE001 - reported, compared
        result["error"] = type(exc).__name__
    acc = stream.accumulator if stream is not None else None
    if acc is not None:
        result.update(content=acc.content, reasoning=acc.reasoning, finish_reason=acc.finish_reason,
                      usage=acc.usage, tool_calls=_norm_calls(acc.tool_calls))
    return result


def run_sdk(sdk, model: str) -> dict:
    """The SDK parses the stream; content/reasoning/finish/usage are read off its chunk objects
    (choice 0), tool calls come from the SDK's own accumulator (ChatCompletionStreamState)."""
    from openai.lib.streaming.chat import ChatCompletionStreamState

    content, reasoning_content, reasoning = [], [], []
    finish = None
    usage = None
    state = ChatCompletionStreamState()
    state_error = None
    result = {"error": None}
    try:
        stream = sdk.chat.completions.create(model=model, messages=MESSAGES, stream=True)
        for chunk in stream:
            if state_error is None:
                try:
                    state.handle_chunk(chunk)
                except Exception as exc:  # noqa: BLE001
                    state_error = "%s: %s" % (type(exc).__name__, exc)
            if chunk.usage is not None:
                usage = chunk.usage.to_dict() if hasattr(chunk.usage, "to_dict") else chunk.usage
            for choice in chunk.choices or []:
                if choice.index != 0:
                    continue
                delta = choice.delta
                if delta is not None:
                    if isinstance(delta.content, str):
                        content.append(delta.content)
                    elif delta.content is not None:
                        result.setdefault("non_string_content", []).append(delta.content)
                    extra = delta.model_extra or {}
                    rc = extra.get("reasoning_content", getattr(delta, "reasoning_content", None))
                    if isinstance(rc, str):
                        reasoning_content.append(rc)
                    r = extra.get("reasoning")
                    if isinstance(r, str):
                        reasoning.append(r)
                if choice.finish_reason:
                    finish = choice.finish_reason
    except Exception as exc:  # noqa: BLE001
        result["error"] = type(exc).__name__
    calls = None
    snap = state.current_completion_snapshot if state_error is None and state._ChatCompletionStreamState__current_completion_snapshot is not None else None
    if snap is not None and snap.choices:
        tc = snap.choices[0].message.tool_calls
        calls = _norm_calls([t.to_dict() for t in tc]) if tc else []
    result.update(content="".join(content), reasoning="".join(reasoning_content) or "".join(reasoning),
                  finish_reason=finish, usage=usage, tool_calls=calls if calls is not None else [],
                  state_error=state_error)
    return result


# -- random valid streams -------------------------------------------------------------------------

_ALPHABET = ["a", "b", "z", " ", "Hello", ",", ".", "\n", "\t", "\"", "\\", "/", "{", "}", "é", "ß", "中", "文",
             "日本語", "😀", "👍🏽", "🏳️\u200d🌈", "e\u0301", "\u200b", "Ω", "ـ", "עברית", "<", ">", "&", "data:", ": x", "\r"]


def _text(rng: random.Random, max_pieces: int) -> list:
    return ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(0, max_pieces))]


def random_stream(rng: random.Random) -> tuple:
    """One random but valid OpenAI-format stream: (body bytes, write_size, expected dict).

    Expected values are built from the generator's own inputs, not from either client."""
    ident = "chatcmpl-%08x" % rng.getrandbits(32)
    include_usage = rng.random() < 0.5
    null_usage = include_usage and rng.random() < 0.5
    reasoning = _text(rng, 6) if rng.random() < 0.4 else []
    content = _text(rng, 12)
    calls = []
    if rng.random() < 0.35:
        for i in range(rng.randint(1, 3)):
            args = json.dumps({"q": "".join(_text(rng, 3)), "n": rng.randint(0, 999)}, ensure_ascii=rng.random() < 0.5)
            calls.append({"id": "call_%d_%04x" % (i, rng.getrandbits(16)), "name": rng.choice(["get_weather", "lookup", "工具"]), "arguments": args})
    finish = "tool_calls" if calls else rng.choice(["stop", "stop", "length", "content_filter"])
    usage = {"prompt_tokens": rng.randint(0, 500), "completion_tokens": rng.randint(0, 500)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]

    def chunk(delta=None, finish_reason=None, choices=None, with_usage=None):
        c = {"id": ident, "object": "chat.completion.chunk", "created": 1700000000, "model": "fake"}
        c["choices"] = choices if choices is not None else [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]
        if with_usage is not None:
            c["usage"] = with_usage
        elif null_usage:
            c["usage"] = None
        return c

    chunks = []
    if rng.random() < 0.8:
        chunks.append(chunk({"role": "assistant", "content": ""}))
    for piece in reasoning:
        chunks.append(chunk({"reasoning_content": piece}))
    for piece in content:
        chunks.append(chunk({"content": piece}))
    for i, call in enumerate(calls):
        chunks.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                             "function": {"name": call["name"], "arguments": ""}}]}))
        args = call["arguments"]
        pos = 0
        while pos < len(args):
            step = rng.randint(1, 12)
            chunks.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": args[pos:pos + step]}}]}))
            pos += step
    chunks.append(chunk({}, finish_reason=finish))
    if include_usage:
        chunks.append(chunk(choices=[], with_usage=usage))

    le = rng.choice(["\n", "\r\n", "\r"])
    space = rng.choice(["", " "])
    parts = []
    comments = 0
    for c in chunks:
        if rng.random() < 0.15:
            parts.append(rng.choice([":", ": keep-alive", ": OPENROUTER PROCESSING"]) + le)
            comments += 1
        ensure_ascii = rng.random() < 0.3
        if rng.random() < 0.1:  # JSON across several data: lines (joined with "\n" by the decoder)
            text = json.dumps(c, ensure_ascii=ensure_ascii, indent=1)
        else:
            text = json.dumps(c, ensure_ascii=ensure_ascii, separators=rng.choice([(",", ":"), (", ", ": ")]))
        for line in text.split("\n"):
            parts.append("data:" + space + line + le)
        parts.append(le)
    if rng.random() < 0.9:
        parts.append("data:" + space + "[DONE]" + le + le)
    body = "".join(parts).encode("utf-8")
    if rng.random() < 0.1:
        body = b"\xef\xbb\xbf" + body  # a BOM: the SSE spec drops it
    # one-byte writes are slow to serve; they are one draw in twenty (the corpus test does all of them)
    write_size = rng.choice([1] + [2, 3, 5, 8, 13, 31, 64, 200, 512, None] * 2)
    expected = {"content": "".join(content), "reasoning": "".join(reasoning), "finish_reason": finish,
                "usage": usage if include_usage else None,
                "tool_calls": [{"id": c["id"], "name": c["name"], "arguments": c["arguments"]} for c in calls]}
    return body, write_size, expected
