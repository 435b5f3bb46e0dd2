"""Structured output: an answer as an instance of a Python type, on every OpenAI-compatible server.

:class:`Target` is what an answer is parsed into (a dataclass, a ``TypedDict``, ``list[X]``, a
plain JSON Schema dict, or a pydantic model, duck-typed: openai2 never imports pydantic) and its
JSON Schema (built by :mod:`schema`, the same rules as tool schemas).  :class:`ParsePlan` is the
fallback ladder, without I/O of its own: the request body of each rung, whether a server's
refusal means "go one rung down", the JSON found in an answer, validation, and the repair
message when it does not match.  ``Chat.parse`` and ``client.chat.completions.parse`` drive it.

The ladder:

1. ``response_format: {"type": "json_schema", ...}`` with a strict-mode schema;
2. ``response_format: {"type": "json_object"}``, the schema stated in a system message;
3. no ``response_format``: the schema in a system message, the JSON taken from the answer even
   inside a code fence or prose (:func:`find_json`, which ``GroupChat`` shares).

Which rung worked is remembered per base URL and model for the life of the process, so a server
that refuses ``json_schema`` costs one refused request per process, not one per call.  The
answer is always validated locally (:func:`openai2.schema.validate`); an invalid one is repaired
by asking again with the errors quoted (``max_repairs`` times, default 1).
"""

from __future__ import annotations

import threading

from .common import TYPE_CHECKING, redact
from .completion import accumulator_from_completion
from .errors import (
    APIStatusError,
    LengthFinishReasonError,
    RefusalError,
    SchemaValidationError,
    redact_value,
)
from .schema import check_schema, from_json, schema_for, validate

if TYPE_CHECKING:
    from typing import Any, Awaitable, Callable, Sequence

    from .completion import ChatAccumulator

#: The rungs of the ladder, top first; ``strategy="auto"`` starts at the top (or the one remembered).
PARSE_STRATEGIES = ("json_schema", "json_object", "prompt")

#: What servers answer when they do not support a ``response_format`` (lower-cased fragments of
#: the error message, with the status codes they come with), and where each was reported.  A
#: refusal that names ``response_format`` or ``json_schema``/``json_object`` with status 400/422
#: counts too; status 500 counts only with one of these known texts.
FORMAT_REFUSALS = (
    # DeepSeek, 400: {"error": {"message": "This response_format type is unavailable now",
    # "type": "invalid_request_error", ...}} (llm-exe/llm-exe#662, khoj-ai/khoj#1336,
    # UKGovernmentBEIS/inspect_ai#4916)
    ("this response_format type is unavailable now", (400, 422)),
    # DeepSeek, 422: "Failed to deserialize the JSON body into the target type: response_format:
    # response_format.type `json_schema` is unavailable now at line 1 column 12440"
    # (browser-use/browser-use#215, dzhng/deep-research#22)
    ("is unavailable now", (400, 422)),
    # DeepSeek, 422: "...response_format.type: invalid type: map, expected variant identifier"
    # (langgenius/dify#12868)
    ("expected variant identifier", (400, 422)),
    # llama.cpp's server before structured outputs, 500: 'response_format type must be one of
    # "text" or "json_object", but got: json_schema' (ggml-org/llama.cpp#9522, ikawrakow/ik_llama.cpp#778)
    ('response_format type must be one of "text" or "json_object"', (400, 500)),
    # llama.cpp, 400/500: 'Either "json_schema" or "grammar" can be specified, but not both'
    # (ggml-org/llama.cpp#11847)
    ('either "json_schema" or "grammar" can be specified', (400, 500)),
    # LM Studio refuses json_object, 400: {"error": "'response_format.type' must be 'json_schema'
    # or 'text'"} (lmstudio-ai/lmstudio-bug-tracker#169, Zazza/sd-ai#2)
    ("'response_format.type' must be", (400, 422)),
    # Azure OpenAI / OpenAI, older models, 400: "Invalid parameter: 'response_format' of type
    # 'json_schema' is not supported with this model. ..." (langchain-ai/langchain#31490,
    # mrwadams/stride-gpt#19 for json_object)
    ("'response_format' of type", (400,)),
    # Volcengine (Doubao), 400: "The parameter `response_format.type` specified in the request are
    # not valid: invalid value: `json_schema`, supported values are: `json_object` and `text`"
    # (agno-agi/agno#2553)
    ("supported values are: `json_object` and `text`", (400,)),
    # Ollama 0.5.2, 400: 'invalid format: expected "json" or a JSON schema' (ollama/ollama#8126)
    ('invalid format: expected "json" or a json schema', (400, 500)),
)
#: Words that make a 400/422 a refusal of the format (when no known text matched).
_ST_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "structured output", "guided_json")
_ST_MEMORY: dict[tuple[str, str], str] = {}
_ST_MEMORY_LOCK = threading.Lock()
#: The marker of the instruction a fallback rung adds (also how the demo model recognises it).
SCHEMA_INSTRUCTION = "Answer with one JSON value only, no prose and no code fence, that matches this JSON Schema:"


def _st_is_pydantic(spec: object) -> bool:
    return (
        isinstance(spec, type)
        and callable(getattr(spec, "model_json_schema", None))
        and callable(getattr(spec, "model_validate", None))
    )


class Target:
    """What an answer is parsed into, and its JSON Schema.

    :param spec: a dataclass, a ``TypedDict``, ``list[X]`` (or another annotation), a JSON
        Schema dict, or a pydantic model class
    :raises TypeError: an unsupported annotation (naming it), a schema dict using keywords the
        local validator cannot check (naming them), or not a type at all
    :ivar schema: the schema asked for (an object: other roots are wrapped in ``{"value": ...}``)
    :ivar name: the schema's name for ``json_schema`` (letters, digits, ``_``, ``-``)
    :ivar strict: whether ``json_schema`` may say ``"strict": true``
    """

    __slots__ = ("spec", "schema", "name", "strict", "wrapped", "kind")

    def __init__(self, spec: object) -> None:
        import copy

        self.spec = spec
        outer = spec.get("json_schema") if isinstance(spec, dict) and spec.get("type") == "json_schema" else None
        if isinstance(outer, dict) and isinstance(outer.get("schema"), dict):
            # the SDK's response_format dict itself: {"type": "json_schema", "json_schema": {...}}
            check_schema(outer["schema"], where="parse(): the schema")
            schema: dict[str, Any] = copy.deepcopy(outer["schema"])
            self.kind, self.strict = "dict", outer.get("strict") is True
            name = str(outer.get("name") or schema.get("title") or "response")
        elif isinstance(spec, dict):
            check_schema(spec, where="parse(): the schema")
            schema = copy.deepcopy(spec)
            self.kind, self.strict = "dict", False
            name = str(spec.get("title") or "response")
        elif _st_is_pydantic(spec):
            schema = spec.model_json_schema()  # type: ignore[attr-defined]
            self.kind, self.strict = "pydantic", False
            name = spec.__name__  # type: ignore[attr-defined]
        else:
            schema = schema_for(spec, strict=True, where="parse(): the schema %s" % _st_type_name(spec))
            self.kind, self.strict = "type", True
            name = getattr(spec, "__name__", None) or "response"
        self.wrapped = schema.get("type") != "object"
        if self.wrapped:
            schema = _st_wrap(schema)
        self.schema = schema
        self.name = (
            "".join(ch if ch.isalnum() and ch.isascii() or ch in "_-" else "_" for ch in name)[:64] or "response"
        )

    def __repr__(self) -> str:
        return "<Target %s (%s)>" % (self.name, self.kind)

    def convert(self, value: object) -> Any:
        """The validated JSON value in the target's shape.

        :raises ValueError: it does not fit (the message has the JSON path)
        """
        if self.wrapped and isinstance(value, dict):
            value = value.get("value")
        if self.kind == "dict":
            return value
        if self.kind == "pydantic":
            return self.spec.model_validate(value)  # type: ignore[attr-defined]
        return from_json(value, self.spec)

    def rewrap(self, value: object) -> object:
        """A wrapped target's bare value as ``{"value": value}`` (an object with ``value`` as it is)."""
        if self.wrapped and not (isinstance(value, dict) and "value" in value):
            return {"value": value}
        return value

    def problems(self, value: object) -> list[str]:
        """Every way ``value`` misses the schema (``"$.path: message"``); [] when it fits."""
        return validate(value, self.schema)


def _st_wrap(schema: dict[str, Any]) -> dict[str, Any]:
    """``{"value": schema}`` as an object schema; the definitions (``$defs``, ``definitions``)
    move to the new root, where the ``$ref`` pointers (``#/$defs/Node``) look for them."""
    inner = dict(schema)
    wrapper: dict[str, Any] = {
        "type": "object",
        "properties": {"value": inner},
        "required": ["value"],
        "additionalProperties": False,
    }
    for key in ("$defs", "definitions"):
        if key in inner:
            wrapper[key] = inner.pop(key)
    return wrapper


def _st_type_name(spec: object) -> str:
    return getattr(spec, "__qualname__", None) or repr(spec)


def find_json(
    text: str, openers: Sequence[str] = ("{", "["), accept: Callable[[object], bool] | None = None
) -> tuple[bool, Any]:
    """The JSON value a model's text carries: the whole text, a fenced block (```json or plain),
    else the first value in the prose that starts with one of ``openers`` (tried in that order)
    and that ``accept`` takes.  ``(False, None)`` when there is none.

    ``GroupChat`` reads its remarks with it too (arrays first, skipping bracketed words)."""
    import json

    stripped = text.strip()
    candidates = []
    try:
        candidates.append(json.loads(stripped))
    except (ValueError, RecursionError):  # too deep to be an answer: looked for below, in parts
        pass
    start = stripped.find("```")
    while start >= 0 and not candidates:
        body_start = stripped.find("\n", start)
        end = stripped.find("```", start + 3)
        if body_start < 0 or end < 0:
            break
        if body_start < end:
            try:
                candidates.append(json.loads(stripped[body_start + 1 : end]))
            except (ValueError, RecursionError):
                pass
        start = stripped.find("```", end + 3)
    for value in candidates:
        if accept is None or accept(value):
            return True, value
    decoder = json.JSONDecoder()
    # Each opener is a new try, and a try reads as far as the value goes: "[[[[x" repeated, or
    # "[[[[..." a megabyte long (each try then costs the whole recursion limit), would take
    # minutes.  The characters read are counted; past a few times the text's length, or after a
    # few values too deep, the search ends: no sensible answer needs that.
    budget = _ST_SCAN_FACTOR * len(stripped) + _ST_SCAN_EXTRA
    too_deep = tries = 0
    import re

    for opener in openers:
        # only where a value can start ("{{{{" or "[x" cannot): found by the regex engine, so a
        # megabyte of "{" costs milliseconds
        follows = _ST_STARTS.get(opener)
        pattern = re.escape(opener) + ("(?=[ \t\r\n]*[%s])" % re.escape(follows) if follows else "")
        for match in re.finditer(pattern, stripped):
            pos = match.start()
            # a failed try costs O(pos) besides (JSONDecodeError counts the lines before it)
            tries += 1
            if tries > _ST_MAX_TRIES:
                return False, None
            try:
                value, end = decoder.raw_decode(stripped, pos)
            except ValueError as exc:
                value, end = _st_nothing, getattr(exc, "pos", pos) or pos
            except RecursionError:
                too_deep += 1
                if too_deep >= _ST_DEEP_TRIES:
                    return False, None
                value, end = _st_nothing, pos
            if value is not _st_nothing and (accept is None or accept(value)):
                return True, value
            budget -= end - pos + 1
            if budget < 0:
                return False, None
    return False, None


_st_nothing = object()
#: How many openers that start a value nested too deeply ``find_json`` tries before giving up.
_ST_DEEP_TRIES = 16
#: ``find_json`` tries at most this many openers (after the cheap look at the next character).
_ST_MAX_TRIES = 256
#: What may follow an opener for a JSON value to start there (after JSON whitespace).
_ST_STARTS = {"{": '"}', "[": '"{[]-0123456789tfn'}


#: ``find_json`` reads at most this many times the text's length (plus the extra) in its tries.
_ST_SCAN_FACTOR = 2
_ST_SCAN_EXTRA = 100_000


def format_refused(error: BaseException) -> bool:
    """Whether a failed request means "this server does not support that ``response_format``"."""
    if not isinstance(error, APIStatusError):
        return False
    status = error.status_code
    text = ("%s %s" % (getattr(error, "message", ""), getattr(error, "body", ""))).lower()
    for fragment, statuses in FORMAT_REFUSALS:
        if fragment in text and status in statuses:
            return True
    return status in (400, 422) and any(word in text for word in _ST_FORMAT_WORDS)


#: A refusal of one schema, not of the format (OpenAI, 400: "Invalid schema for response_format
#: 'Person': In context=(), 'required' is required to be supplied ..."; vLLM's guided decoding:
#: "Invalid JSON schema"): the ladder goes down for that call, the rung memory stays.
_ST_SCHEMA_REFUSALS = ("invalid schema for response_format", "invalid json schema")


def _st_schema_refused(error: BaseException) -> bool:
    text = ("%s %s" % (getattr(error, "message", ""), getattr(error, "body", ""))).lower()
    return any(fragment in text for fragment in _ST_SCHEMA_REFUSALS)


def remembered_rung(base_url: str, model: str) -> str | None:
    """The rung that worked last for this server and model, in this process."""
    with _ST_MEMORY_LOCK:
        return _ST_MEMORY.get((base_url, model))


def forget_rungs() -> None:
    """Forget every remembered rung (tests; a server upgraded while the process runs)."""
    with _ST_MEMORY_LOCK:
        _ST_MEMORY.clear()


class ParsePlan:
    """The ladder for one ``parse`` call (no I/O: its drivers send).

    :param target: the :class:`Target`
    :param base_url: / :param model: the key of the rung memory
    :param strategy: ``"auto"`` (start at the remembered rung, else the top, and go down on a
        refusal), or one rung to use alone
    :param max_repairs: how many times an answer that misses the schema is sent back to be fixed
    :param secrets: keys to mask in errors
    """

    def __init__(
        self,
        target: Target,
        *,
        base_url: str,
        model: str,
        strategy: str = "auto",
        max_repairs: int = 1,
        secrets: Sequence[str] = (),
    ) -> None:
        if strategy != "auto" and strategy not in PARSE_STRATEGIES:
            raise ValueError("strategy must be 'auto', 'json_schema', 'json_object' or 'prompt', got %r" % (strategy,))
        if not isinstance(max_repairs, int) or isinstance(max_repairs, bool) or max_repairs < 0:
            raise ValueError("max_repairs must be a whole number, 0 or more, got %r" % (max_repairs,))
        self.target = target
        self.key = (base_url, model)
        self.forced = strategy != "auto"
        start = strategy if self.forced else (remembered_rung(base_url, model) or PARSE_STRATEGIES[0])
        self.rungs = [start] if self.forced else list(PARSE_STRATEGIES[PARSE_STRATEGIES.index(start) :])
        self.max_repairs = max_repairs
        self.repairs = 0
        self.secrets = tuple(secrets)
        self.repair_messages: list[dict[str, Any]] = []
        self.remember = not self.forced  # a rung used alone says nothing about the rungs above it

    @property
    def rung(self) -> str:
        """The rung the next request uses."""
        return self.rungs[0]

    def body(self, base: dict[str, Any]) -> dict[str, Any]:
        """The request of the current rung: ``base`` (model, messages, parameters) with its
        ``response_format`` and, below the top rung, the schema in a system message; then the
        repair turns, if any."""
        import json

        body = dict(base)
        body.pop("response_format", None)
        messages = list(base["messages"])
        rung = self.rung
        if rung == "json_schema":
            spec: dict[str, Any] = {"name": self.target.name, "schema": self.target.schema}
            if self.target.strict:
                spec["strict"] = True
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
        else:
            if rung == "json_object":
                body["response_format"] = {"type": "json_object"}
            instruction = SCHEMA_INSTRUCTION + "\n" + json.dumps(self.target.schema, ensure_ascii=False)
            messages = _st_with_instruction(messages, instruction)
        body["messages"] = messages + self.repair_messages
        return body

    def refused(self, error: BaseException) -> bool:
        """After a failed request: True when it was a refusal of this rung's format and a lower
        rung is left to try (the plan moved to it); False means the error stands."""
        if self.forced or len(self.rungs) < 2 or not format_refused(error):
            return False
        if _st_schema_refused(error):
            # the server supports the format but not this schema: go down for this call, and
            # leave the rung memory (every other schema would pay for this one) alone
            self.remember = False
        self.rungs.pop(0)
        return True

    def _masked(self, completion: object) -> object:
        return redact_value(completion, self.secrets)

    def take(self, acc: ChatAccumulator, completion: object = None) -> tuple[bool, Any]:
        """Read an answer: ``(True, value)`` when it parsed and matched (the rung is remembered,
        unless the strategy forced it);
        ``(False, None)`` when a repair turn was added and the plan must be sent again.

        :raises RefusalError: the model refused
        :raises LengthFinishReasonError: the answer was cut off
        :raises SchemaValidationError: no JSON, or not matching, after ``max_repairs`` repairs
        """
        raw = acc.content
        if acc.refusal:
            raise RefusalError(redact(acc.refusal, self.secrets), completion=self._masked(completion))
        if acc.finish_reason == "length":
            raise LengthFinishReasonError(
                "the answer was cut off at the token limit (finish_reason 'length') before its JSON was "
                "complete: raise max_tokens, or ask for less",
                raw=redact(raw, self.secrets),
                completion=self._masked(completion),
            )
        target = self.target
        # the first JSON value in the answer that fits (prose may quote an example first); a
        # wrapped target (list[X] as {"value": [...]}) takes the bare value too, which a model
        # asked in the prompt often writes
        found, value = find_json(raw, accept=lambda v: not target.problems(target.rewrap(v)))
        if found:
            value = target.rewrap(value)
        else:
            found, value = find_json(raw)  # none fits: the first one, for the problems
        problems = target.problems(value) if found else ["$: the answer holds no JSON value"]
        if not problems:
            try:
                converted = self.target.convert(value)
            except (ValueError, TypeError) as exc:
                problems = [str(exc)]
            else:
                if self.remember:
                    with _ST_MEMORY_LOCK:
                        _ST_MEMORY[self.key] = self.rung
                return True, converted
        # the problems quote the answer's values: a key the server echoed is masked
        problems = [redact(problem, self.secrets) for problem in problems]
        if self.repairs >= self.max_repairs:
            raise SchemaValidationError(
                "the answer does not match the schema%s: %s"
                % (
                    " (after %d repair%s)" % (self.repairs, "" if self.repairs == 1 else "s") if self.repairs else "",
                    "; ".join(problems),
                ),
                raw=redact(raw, self.secrets),
                errors=problems,
                completion=self._masked(completion),
            )
        self.repairs += 1
        self.repair_messages = self.repair_messages + [
            {"role": "assistant", "content": raw},
            {
                "role": "user",
                "content": "Your answer does not match the JSON Schema:\n- %s\n"
                "Answer again with only the corrected JSON." % "\n- ".join(problems),
            },
        ]
        return False, None


def _st_with_instruction(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """``messages`` with the schema instruction in their first system message (or in a new one
    at the start): servers and chat templates that allow one system message only accept it."""
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        first = dict(messages[0], content=messages[0]["content"] + "\n\n" + instruction)
        return [first] + messages[1:]
    return [{"role": "system", "content": instruction}] + messages


class ParseResult:
    """What a parse exchange ended with: the value, the last request and its answer."""

    __slots__ = ("value", "request", "result", "acc")

    def __init__(self, value: Any, request: dict[str, Any], result: dict[str, Any], acc: ChatAccumulator) -> None:
        self.value = value
        self.request = request
        self.result = result
        self.acc = acc


def run_parse(send: Callable[[dict[str, Any]], dict[str, Any]], body: dict[str, Any], plan: ParsePlan) -> ParseResult:
    """Drive the ladder: send each rung's request (a refusal of its format goes one rung down),
    read the answer, repair it when it misses the schema.

    :raises StructuredOutputError: see :meth:`ParsePlan.take`
    :raises APIError: a request failed for another reason than the format
    """
    while True:
        request = plan.body(body)
        try:
            result = send(request)
        except APIStatusError as exc:
            if plan.refused(exc):
                continue
            raise
        acc = accumulator_from_completion(result, secrets=plan.secrets)
        done, value = plan.take(acc, result)
        if done:
            return ParseResult(value, request, result, acc)


async def run_parse_async(
    send: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]], body: dict[str, Any], plan: ParsePlan
) -> ParseResult:
    """:func:`run_parse` with an awaitable ``send``."""
    while True:
        request = plan.body(body)
        try:
            result = await send(request)
        except APIStatusError as exc:
            if plan.refused(exc):
                continue
            raise
        acc = accumulator_from_completion(result, secrets=plan.secrets)
        done, value = plan.take(acc, result)
        if done:
            return ParseResult(value, request, result, acc)
