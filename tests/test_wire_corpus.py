"""Every recorded response in ../shared/wire-corpus/ replayed through the SSE decoder and the chat
layer, compared with the corpus's own expected.json (assembled by an independent script).

Streams are fed whole, byte by byte, in fixed sizes and in seeded random pieces, and also with
their LF line ends rewritten to CRLF and to CR (the corpus has no CR-framed recording).
``.jsonl`` files are payload-only recordings: each line is framed as ``data: <line>\\n\\n``.

Where this test deliberately differs from expected.json (see DEVIATIONS below):

* ``anthropic/stream-tool-index-1.sse`` ends ``data: [DONE]\\n`` with no blank line after it.
  Under the WHATWG rules an event is dispatched only by a blank line, and an unfinished event at
  end of stream is discarded, so that ``[DONE]`` is never seen: ``done`` is False.  The answer is
  still complete (finish_reason "tool_calls"), so nothing is lost.  expected.json says
  ``done: true``; its own ``events: 8`` count (8 JSON chunks) agrees with a strict reading.
* ``openrouter/stream-midstream-error.sse`` sends a chunk with a top-level ``"error"`` object
  (and the final usage) before ``[DONE]``.  A chunk that says the request failed must not pass
  silently, so iter_chunk_dicts raises APIError there; ``[DONE]`` is never read (``done`` False
  where expected.json says true) and the usage of the error chunk reaches the caller through
  ``APIError.body["usage"]`` rather than ``accumulator.usage``.
"""
import json
import os
import random
import re
import unittest

from openai2.completion import ChatAccumulator, accumulator_from_completion, iter_chunk_dicts
from openai2.errors import APIError, make_status_error, status_error_class
from openai2.sse import SSEDecoder

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "wire-corpus"))
HAVE_CORPUS = os.path.isfile(os.path.join(CORPUS, "expected.json"))
SKIP_REASON = "wire corpus not found at %s (it lives beside the repository, in ../shared/wire-corpus)" % CORPUS

# Files whose expected.json entry we judge wrong, with the value we test instead (see docstring).
DEVIATIONS = {
    "anthropic/stream-tool-index-1.sse": {"done": False},
    "openrouter/stream-midstream-error.sse": {"done": False, "usage": None},
}


def corpus_files(prefix_pattern):
    out = []
    for provider in sorted(os.listdir(CORPUS)):
        folder = os.path.join(CORPUS, provider)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if re.match(prefix_pattern, name):
                out.append(provider + "/" + name)
    return out


def read_stream(rel):
    with open(os.path.join(CORPUS, rel), "rb") as f:
        raw = f.read()
    if rel.endswith(".jsonl"):
        raw = b"".join(b"data: " + line + b"\n\n" for line in raw.split(b"\n") if line.strip())
    return raw


def chunkings(raw, seed):
    """(label, pieces) for several ways of cutting the same bytes."""
    rng = random.Random(seed)
    yield "whole", [raw]
    yield "bytes", [raw[i : i + 1] for i in range(len(raw))]
    for size in (7, 64, 1000):
        yield "size-%d" % size, [raw[i : i + size] for i in range(0, len(raw), size)]
    for n in range(2):
        pieces, i = [], 0
        while i < len(raw):
            step = rng.randint(1, 200)
            pieces.append(raw[i : i + step])
            i += step
        yield "random-%d" % n, pieces


def replay(pieces):
    """Feed pieces through decoder + iter_chunk_dicts + accumulator, as the client does.

    :returns: (accumulator, decoder, error or None, content streamed through add())
    """
    decoder = SSEDecoder()
    acc = ChatAccumulator()
    streamed = []
    try:
        for piece in pieces:
            events = decoder.feed(piece)
            if events:
                for c in iter_chunk_dicts(events, acc):
                    streamed.append(acc.add(c))
                if acc.done:
                    break
        else:
            for c in iter_chunk_dicts(decoder.close(), acc):
                streamed.append(acc.add(c))
    except APIError as exc:
        return acc, decoder, exc, "".join(streamed)
    return acc, decoder, None, "".join(streamed)


@unittest.skipUnless(HAVE_CORPUS, SKIP_REASON)
class WireCorpusStreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(CORPUS, "expected.json"), encoding="utf-8") as f:
            cls.expected = json.load(f)

    def test_every_stream_file_has_an_expectation(self):
        files = corpus_files(r"stream.*\.(sse|jsonl)$")
        self.assertGreater(len(files), 20)
        self.assertEqual(sorted(set(files) - set(self.expected)), [])

    def check(self, rel, exp, acc, decoder, error, streamed, label):
        exp = dict(exp)
        exp.update(DEVIATIONS.get(rel, {}))
        msg = "%s (%s)" % (rel, label)
        self.assertEqual(acc.content, exp["content"], msg)
        self.assertEqual(streamed, exp["content"], msg)
        self.assertEqual(acc.reasoning, exp.get("reasoning", ""), msg)
        self.assertEqual(acc.refusal, exp.get("refusal", ""), msg)
        self.assertEqual(acc.tool_calls, exp.get("tool_calls", []), msg)
        self.assertEqual(acc.finish_reason, exp["finish_reason"], msg)
        self.assertEqual(acc.usage, exp["usage"], msg)
        if "done" in exp:
            self.assertEqual(acc.done, exp["done"], msg)
        if "comments" in exp:
            self.assertEqual(decoder.comments, exp["comments"], msg)
        for index, other in exp.get("other_choices", {}).items():
            got = acc.other_choices[int(index)]
            self.assertEqual({k: got[k] for k in other}, other, msg)
        errors = exp.get("errors") or []
        if errors:
            self.assertIsNotNone(error, msg + ": an in-stream error must raise APIError")
            want = errors[0]
            self.assertEqual(error.message, want["message"], msg)
            self.assertEqual(error.code, want.get("code"), msg)
            self.assertEqual(error.type, want.get("type"), msg)
            # The error event itself is one of the counted events; it is raised, not added.
            self.assertEqual(acc.chunks, exp["events"] - 1, msg)
        else:
            self.assertIsNone(error, msg)
            self.assertEqual(acc.chunks, exp["events"], msg)
            # A stream that finished normally is complete: [DONE] or a finish_reason.
            self.assertTrue(acc.complete, msg)

    def test_streams_in_many_chunkings(self):
        for seed, (rel, exp) in enumerate(sorted(self.expected.items())):
            raw = read_stream(rel)
            self.assertNotIn(b"\r", raw, rel)  # so the CRLF/CR rewrites below are faithful
            variants = [("LF", raw), ("CRLF", raw.replace(b"\n", b"\r\n")), ("CR", raw.replace(b"\n", b"\r"))]
            for eol, data in variants:
                for label, pieces in chunkings(data, seed):
                    with self.subTest(file=rel, eol=eol, chunking=label):
                        acc, decoder, error, streamed = replay(pieces)
                        self.check(rel, exp, acc, decoder, error, streamed, eol + "/" + label)

    def test_anthropic_done_needs_the_final_blank_line(self):
        # The reason for the deviation: with the blank line added, [DONE] is dispatched.
        rel = "anthropic/stream-tool-index-1.sse"
        raw = read_stream(rel)
        self.assertTrue(raw.endswith(b"data: [DONE]\n") and not raw.endswith(b"\n\n"))
        acc, _, error, _ = replay([raw])
        self.assertIsNone(error)
        self.assertFalse(acc.done)
        self.assertTrue(acc.complete)
        acc, _, error, _ = replay([raw + b"\n"])
        self.assertTrue(acc.done)

    def test_openrouter_midstream_error_keeps_what_arrived(self):
        rel = "openrouter/stream-midstream-error.sse"
        exp = self.expected[rel]
        acc, decoder, error, _ = replay([read_stream(rel)])
        self.assertIsInstance(error, APIError)
        self.assertEqual((error.message, error.code), ("Token limit reached", 400))
        # The usage expected.json reports arrived on the error chunk itself.
        self.assertEqual(error.body["usage"], exp["usage"])
        self.assertEqual(acc.reasoning, exp["reasoning"])
        self.assertEqual(acc.finish_reason, "length")
        self.assertEqual(decoder.comments, 17)

    def test_groq_error_event(self):
        rel = "groq/stream-event-error.sse"
        acc, _, error, _ = replay([read_stream(rel)])
        self.assertIsInstance(error, APIError)
        self.assertEqual(error.code, "tool_use_failed")
        self.assertEqual(error.body["error"]["status_code"], 400)
        self.assertFalse(acc.complete)


def _first_choice_fields(body):
    """What a completion body says, read straight from the JSON (no openai2 code involved)."""
    out = {}
    for choice in body["choices"]:
        message = choice.get("message") or {}
        content = message.get("content")
        reasoning = message.get("reasoning_content")
        if reasoning is None:
            reasoning = message.get("reasoning")
        calls = []
        for call in message.get("tool_calls") or []:
            call = {k: v for k, v in call.items() if k != "index"}
            calls.append(call)
        out[choice.get("index", 0)] = {
            "content": content if isinstance(content, str) else "",
            "reasoning": reasoning or "",
            "refusal": message.get("refusal") or "",
            "tool_calls": calls,
            "finish_reason": choice.get("finish_reason"),
        }
    return out


@unittest.skipUnless(HAVE_CORPUS, SKIP_REASON)
class WireCorpusCompletionTest(unittest.TestCase):
    def load(self, rel):
        with open(os.path.join(CORPUS, rel), "rb") as f:
            return json.loads(f.read().decode("utf-8"))

    def test_every_nonstream_file(self):
        files = corpus_files(r"nonstream.*\.json$")
        self.assertGreater(len(files), 10)
        for rel in files:
            with self.subTest(file=rel):
                body = self.load(rel)
                acc = accumulator_from_completion(body)
                truth = _first_choice_fields(body)
                got = {0: {"content": acc.content, "reasoning": acc.reasoning, "refusal": acc.refusal, "tool_calls": acc.tool_calls, "finish_reason": acc.finish_reason}}
                for index, other in acc.other_choices.items():
                    got[index] = {k: other[k] for k in ("content", "reasoning", "refusal", "tool_calls", "finish_reason")}
                self.assertEqual(got, truth)
                self.assertEqual(acc.usage, body.get("usage"))
                self.assertEqual(acc.id, body.get("id") or None)
                self.assertTrue(acc.complete)

    def test_specific_shapes(self):
        acc = accumulator_from_completion(self.load("gemini/nonstream-tool-call-empty-id.json"))
        self.assertEqual(acc.tool_calls[0]["id"], "")
        self.assertEqual(acc.tool_calls[0]["function"]["name"], "get_current_time")
        acc = accumulator_from_completion(self.load("cerebras/nonstream-tool-call-no-content-key.json"))
        self.assertEqual(acc.content, "")
        self.assertIsNone(acc.message()["content"])
        self.assertEqual(acc.finish_reason, "tool_calls")
        acc = accumulator_from_completion(self.load("ollama/nonstream-cloud-gpt-oss-reasoning.json"))
        self.assertTrue(acc.reasoning.startswith("We need to answer"))
        self.assertEqual(acc.content, "Paris.")
        acc = accumulator_from_completion(self.load("openai/nonstream-n2.json"))
        self.assertEqual(sorted(acc.other_choices), [1])
        self.assertNotEqual(acc.other_choices[1]["content"], acc.content)
        acc = accumulator_from_completion(self.load("together/nonstream-tool-call.json"))
        self.assertNotIn("index", acc.tool_calls[0])
        acc = accumulator_from_completion(self.load("azure/nonstream-finish-content-filter.json"))
        self.assertEqual((acc.content, acc.finish_reason), ("", "content_filter"))
        acc = accumulator_from_completion(self.load("groq/nonstream.json"))
        self.assertEqual(acc.usage["total_tokens"], self.load("groq/nonstream.json")["usage"]["total_tokens"])

    def test_leading_whitespace_body(self):
        with open(os.path.join(CORPUS, "openrouter/nonstream-leading-whitespace.json"), "rb") as f:
            raw = f.read()
        self.assertTrue(raw[:1].isspace())
        acc = accumulator_from_completion(json.loads(raw))
        self.assertEqual(acc.content, "2 + 2 = 4.")


@unittest.skipUnless(HAVE_CORPUS, SKIP_REASON)
class WireCorpusErrorTest(unittest.TestCase):
    def test_every_error_file(self):
        files = corpus_files(r"error-\d{3}-.*\.json$")
        self.assertGreater(len(files), 5)
        for rel in files:
            with self.subTest(file=rel):
                status = int(re.search(r"error-(\d{3})-", rel).group(1))
                with open(os.path.join(CORPUS, rel), "rb") as f:
                    raw = f.read()
                err_obj = json.loads(raw)["error"]
                exc = make_status_error(status, {"x-request-id": "req_corpus"}, raw)
                self.assertIsInstance(exc, status_error_class(status))
                self.assertEqual(exc.status_code, status)
                self.assertEqual(exc.message, err_obj["message"])
                self.assertEqual(exc.code, err_obj.get("code"))
                self.assertEqual(exc.type, err_obj.get("type"))
                self.assertEqual(exc.param, err_obj.get("param"))
                self.assertEqual(exc.request_id, "req_corpus")
                self.assertIn(err_obj["message"], str(exc))


if __name__ == "__main__":
    unittest.main()
