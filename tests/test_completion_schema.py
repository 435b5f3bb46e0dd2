"""Every chat.completion openai2 assembles follows OpenAI's CreateChatCompletionResponse schema.

The schema's required fields and types are written down by hand below (from openai/openai-openapi,
openapi.yaml: CreateChatCompletionResponse, ChatCompletionResponseMessage, CompletionUsage,
ChatCompletionMessageToolCall), not vendored:

* response: required ``id`` (string), ``object`` ("chat.completion"), ``created`` (integer),
  ``model`` (string), ``choices`` (array); ``usage`` optional, an object when present (never null);
* choice: required ``index`` (integer), ``message``, ``finish_reason`` (stop, length, tool_calls,
  content_filter, function_call), ``logprobs`` (object with ``content`` and ``refusal``, each an
  array or null; or null);
* message: required ``role`` ("assistant"), ``content`` (string or null), ``refusal`` (string or
  null); ``tool_calls`` optional: an array of ``{id: string, type: "function", function: {name:
  string, arguments: string}}``;
* usage: required ``prompt_tokens``, ``completion_tokens``, ``total_tokens`` (integers).

Streams come from the random stream generator of test_streaming, cut at every point, from
hand-written odd streams, and from the wire corpus (streams and whole responses, re-assembled).
"""
import json
import os
import random
import unittest

from openai2.completion import ChatAccumulator, accumulator_from_completion, iter_chunk_dicts
from openai2.sse import SSEDecoder
from tests.test_streaming import generate_stream
from tests.test_wire_corpus import CORPUS, HAVE_CORPUS, SKIP_REASON, corpus_files, read_stream

FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def schema_errors(body):
    """What is wrong with ``body`` as a CreateChatCompletionResponse (an empty list if nothing)."""
    errors = []

    def need(cond, what):
        if not cond:
            errors.append(what)

    need(isinstance(body, dict), "response is an object")
    if errors:
        return errors
    need(isinstance(body.get("id"), str), "id is a string")
    need(body.get("object") == "chat.completion", "object is chat.completion")
    need(is_int(body.get("created")), "created is an integer")
    need(isinstance(body.get("model"), str), "model is a string")
    if "usage" in body:
        usage = body["usage"]
        need(isinstance(usage, dict), "usage is an object when present")
        if isinstance(usage, dict):
            for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
                need(is_int(usage.get(name)), "usage.%s is an integer" % name)
    if "system_fingerprint" in body:
        need(isinstance(body["system_fingerprint"], str), "system_fingerprint is a string")
    choices = body.get("choices")
    need(isinstance(choices, list), "choices is an array")
    for n, choice in enumerate(choices if isinstance(choices, list) else ()):
        where = "choices[%d]" % n
        if not isinstance(choice, dict):
            errors.append(where + " is an object")
            continue
        for name in ("index", "message", "finish_reason", "logprobs"):
            need(name in choice, "%s.%s is present" % (where, name))
        need(is_int(choice.get("index")), where + ".index is an integer")
        need(choice.get("finish_reason") in FINISH_REASONS, where + ".finish_reason is one of the five")
        logprobs = choice.get("logprobs")
        if logprobs is not None:
            need(isinstance(logprobs, dict), where + ".logprobs is an object or null")
            if isinstance(logprobs, dict):
                for name in ("content", "refusal"):
                    need(name in logprobs and (logprobs[name] is None or isinstance(logprobs[name], list)),
                         "%s.logprobs.%s is an array or null" % (where, name))
        message = choice.get("message")
        if not isinstance(message, dict):
            errors.append(where + ".message is an object")
            continue
        need(message.get("role") == "assistant", where + ".message.role is assistant")
        for name in ("content", "refusal"):
            need(name in message and (message[name] is None or isinstance(message[name], str)),
                 "%s.message.%s is a string or null" % (where, name))
        if "tool_calls" in message:
            calls = message["tool_calls"]
            need(isinstance(calls, list), where + ".message.tool_calls is an array")
            for m, call in enumerate(calls if isinstance(calls, list) else ()):
                at = "%s.message.tool_calls[%d]" % (where, m)
                need(isinstance(call, dict) and isinstance(call.get("id"), str), at + ".id is a string")
                need(isinstance(call, dict) and call.get("type") == "function", at + ".type is function")
                fn = call.get("function") if isinstance(call, dict) else None
                need(isinstance(fn, dict) and isinstance(fn.get("name"), str) and isinstance(fn.get("arguments"), str),
                     at + ".function has string name and arguments")
    try:
        json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        errors.append("not JSON that encodes as UTF-8: %s" % exc)
    return errors


def stream_chunks(raw):
    decoder = SSEDecoder()
    acc = ChatAccumulator()
    chunks = list(iter_chunk_dicts(decoder.feed(raw) + decoder.close(), acc))
    return chunks, acc.done


def assemble(chunks, done):
    acc = ChatAccumulator()
    for c in chunks:
        acc.add(c)
    acc.done = done
    return acc


class ValidatorTest(unittest.TestCase):
    """The checker itself must reject what the schema rejects."""

    def good(self):
        return {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "x", "refusal": None},
                             "finish_reason": "stop", "logprobs": None}]}

    def test_a_good_body_passes_and_each_breakage_is_caught(self):
        self.assertEqual(schema_errors(self.good()), [])
        breakages = [
            lambda b: b.update(usage=None),
            lambda b: b.update(usage={"total_tokens": 3}),
            lambda b: b.pop("created"),
            lambda b: b["choices"][0].pop("logprobs"),
            lambda b: b["choices"][0]["message"].pop("refusal"),
            lambda b: b["choices"][0]["message"].update(role="model"),
            lambda b: b["choices"][0].update(finish_reason=None),
            lambda b: b["choices"][0].update(finish_reason="eos"),
            lambda b: b["choices"][0]["message"].update(content=["x"]),
            lambda b: b["choices"][0]["message"].update(tool_calls=[{"id": "c", "type": None, "function": {"name": "f", "arguments": "{}"}}]),
            lambda b: b["choices"][0]["message"].update(content="\ud83d"),
        ]
        for n, breakage in enumerate(breakages):
            body = self.good()
            breakage(body)
            with self.subTest(n=n):
                self.assertNotEqual(schema_errors(body), [])


class AssembledCompletionSchemaTest(unittest.TestCase):
    def check(self, body, label):
        self.assertEqual(schema_errors(body), [], "%s: %s" % (label, json.dumps(body, ensure_ascii=False)[:600]))

    def test_random_streams_whole_and_cut_short(self):
        rng = random.Random(20240601)
        for case in range(60):
            raw, _ = generate_stream(rng)
            chunks, done = stream_chunks(raw)
            for cut in range(len(chunks) + 1):
                acc = assemble(chunks[:cut], done and cut == len(chunks))
                with self.subTest(case=case, cut=cut):
                    body = acc.completion()
                    self.check(body, "case %d cut %d" % (case, cut))
                    # re-assembled from the completion itself, it stays valid and says the same
                    again = accumulator_from_completion(body).completion()
                    self.check(again, "re-assembled")
                    self.assertEqual(again["choices"], body["choices"])

    def test_odd_streams(self):
        def c(delta=None, finish=None, index=0, **top):
            out = {"choices": [{"index": index, "delta": delta or {}, "finish_reason": finish}]}
            out.update(top)
            return out

        streams = {
            "no metadata at all, cut short": ([c({"content": "partial"})], False),
            "role model": ([c({"role": "model", "content": "hi"}), c({}, "stop")], True),
            "role tool and user": ([c({"role": "tool"}), c({"role": "user", "content": "x"}), c({}, "stop")], True),
            "tool call without type or id": ([c({"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]})], True),
            "unknown and odd finish reasons": ([c({"content": "a"}, "eos"), c({"content": "b"}, "STOP", index=1), c({}, "abort", index=2), c({}, "max_tokens", index=3)], True),
            "usage without counts": ([c({"content": "a"}, "stop", usage={"total_tokens": 3})], True),
            "usage with null counts": ([c({"content": "a"}, "stop", usage={"prompt_tokens": None, "completion_tokens": 1, "total_tokens": 1})], True),
            "usage without total": ([c({"content": "a"}, "stop", usage={"prompt_tokens": 2, "completion_tokens": 1})], True),
            "refusal only": ([c({"refusal": "no"}), c({}, "stop")], True),
            "logprobs": ([{"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [{"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []}], "refusal": None}}]}, c({}, "stop")], True),
            "nothing": ([], False),
            "done without finish": ([c({"content": "x"})], True),
            "lone surrogate": ([c({"content": "x\ud83d"})], False),
            "bad id/model/created types": ([c({"content": "x"}, "stop", id=5, model=["m"], created="now")], True),
        }
        for label, (chunks, done) in streams.items():
            with self.subTest(label):
                acc = assemble(chunks, done)
                body = acc.completion()
                self.check(body, label)
                self.check(accumulator_from_completion(body).completion(), label + " (re-assembled)")
        # what the odd cases say
        acc = assemble(*streams["no metadata at all, cut short"])
        self.assertEqual(acc.completion()["choices"][0]["finish_reason"], "length")
        acc = assemble(*streams["done without finish"])
        self.assertEqual(acc.completion()["choices"][0]["finish_reason"], "stop")
        acc = assemble(*streams["tool call without type or id"])
        self.assertEqual(acc.completion()["choices"][0]["finish_reason"], "tool_calls")
        body = assemble(*streams["unknown and odd finish reasons"]).completion()
        self.assertEqual([ch["finish_reason"] for ch in body["choices"]], ["stop", "stop", "stop", "length"])
        self.assertEqual([ch.get("native_finish_reason") for ch in body["choices"]], ["eos", "STOP", "abort", "max_tokens"])
        self.assertNotIn("usage", assemble(*streams["usage without counts"]).completion())
        self.assertEqual(assemble(*streams["usage without total"]).completion()["usage"], {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3})
        self.assertEqual(assemble(*streams["logprobs"]).completion()["choices"][0]["logprobs"]["content"][0]["token"], "a")
        self.assertEqual(assemble(*streams["role model"]).role, "model")

    @unittest.skipUnless(HAVE_CORPUS, SKIP_REASON)
    def test_wire_corpus_streams_and_responses(self):
        for rel in corpus_files(r"stream.*\.(sse|jsonl)$"):
            decoder = SSEDecoder()
            acc = ChatAccumulator()
            try:
                for chunk in iter_chunk_dicts(decoder.feed(read_stream(rel)) + decoder.close(), acc):
                    acc.add(chunk)
            except Exception:  # noqa: S110 - the in-stream error files: what arrived still assembles
                pass
            with self.subTest(file=rel):
                self.check(acc.completion(), rel)
                self.check(accumulator_from_completion(acc.completion()).completion(), rel + " (re-assembled)")
        for rel in corpus_files(r"nonstream.*\.json$"):
            with open(os.path.join(CORPUS, rel), "rb") as f:
                body = json.loads(f.read().decode("utf-8"))
            with self.subTest(file=rel):
                self.check(accumulator_from_completion(body).completion(), rel)

    def test_the_fake_servers_answers(self):
        # users test their code against openai2.testing: its answers must be valid completions too
        from openai2.testing import FakeServer, Reply, chat_completion

        self.check(chat_completion("hi"), "chat_completion()")
        self.check(chat_completion(None, tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}], finish_reason="tool_calls"), "tool call")
        with FakeServer([Reply("hello"), Reply("again", usage=None)]) as server:
            from openai2 import OpenAI

            client = OpenAI("sk-test", base_url=server.base_url)
            for label in ("with usage", "without usage"):
                body = client.complete({"model": "m", "messages": [{"role": "user", "content": "q"}]})
                self.check(body, "FakeServer " + label)
            client.close()


if __name__ == "__main__":
    unittest.main()
