"""One answer, one shape: the same answer given whole, streamed, or as a JSON body answering a
stream request gives the identical history message, ``completion()`` and reasoning.

Each case of the table is one answer written twice by hand: as the ``message`` of a whole
``chat.completion`` and as the deltas a server streams for it.  The three paths are checked at
the accumulator (``ChatAccumulator``: ``history_message()``, ``completion()``, ``reasoning``) and
through ``Chat`` over the in-memory transport (the last history message, ``last_reasoning``).
"""
import json
import unittest

import openai2
from openai2 import Chat, OpenAI
from openai2.completion import ChatAccumulator, accumulator_from_completion, iter_chunk_dicts
from openai2.sse import SSEDecoder
from openai2.testing import MemoryTransport, Reply

KEY = "sk-one-answer-0123456789abcdef"
BASE = "https://api.test/v1"
META = {"id": "chatcmpl-one", "created": 1700000000, "model": "m-1"}
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}},
    {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
]

# name: (whole message, streamed deltas, finish_reason, expected history message or None = refused)
CASES = {
    "text": (
        {"role": "assistant", "content": "Hello"},
        [{"role": "assistant", "content": "Hel"}, {"content": "lo"}],
        "stop",
        {"role": "assistant", "content": "Hello"},
    ),
    "refusal only": (
        {"role": "assistant", "content": None, "refusal": "I can't help with that."},
        [{"role": "assistant", "refusal": "I can't"}, {"refusal": " help with that."}],
        "stop",
        {"role": "assistant", "content": "", "refusal": "I can't help with that."},
    ),
    "tool calls": (
        {"role": "assistant", "content": None, "tool_calls": CALLS},
        [
            {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                  "function": {"name": "lookup", "arguments": '{"q"'}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
            {"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                             "function": {"name": "time", "arguments": "{}"}}]},
        ],
        "tool_calls",
        {"role": "assistant", "content": None, "tool_calls": CALLS},
    ),
    "function_call": (
        {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": '{"q": 1}'}},
        [{"role": "assistant", "function_call": {"name": "lookup", "arguments": '{"q"'}},
         {"function_call": {"arguments": ": 1}"}}],
        "function_call",
        {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": '{"q": 1}'}},
    ),
    "reasoning": (
        {"role": "assistant", "content": "51", "reasoning_content": "50 + 1"},
        [{"role": "assistant", "reasoning_content": "50 "}, {"reasoning_content": "+ 1"}, {"content": "51"}],
        "stop",
        {"role": "assistant", "content": "51"},
    ),
    "name and audio": (
        {"role": "assistant", "content": "hi", "name": "bot",
         "audio": {"id": "au_1", "data": "AAAA", "transcript": "hi", "expires_at": 123}},
        [{"role": "assistant", "name": "bot", "audio": {"id": "au_1", "data": "AA"}},
         {"content": "hi", "audio": {"data": "AA", "transcript": "hi", "expires_at": 123}}],
        "stop",
        {"role": "assistant", "content": "hi", "name": "bot", "audio": {"id": "au_1"}},
    ),
    "text and thinking parts": (
        {"role": "assistant", "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                                          {"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]},
        [{"role": "assistant", "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]}]},
         {"content": [{"type": "text", "text": "Hel"}]}, {"content": [{"type": "text", "text": "lo"}]}],
        "stop",
        {"role": "assistant", "content": "Hello"},
    ),
    "foreign role and fields": (
        {"role": "model", "content": "ok", "annotations": [], "provider_specific_fields": {"x": 1}},
        [{"role": "model", "content": "o"}, {"content": "k"}],
        "stop",
        {"role": "assistant", "content": "ok"},
    ),
    "an image part is refused": (
        {"role": "assistant", "content": [{"type": "text", "text": "look "},
                                          {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
        [{"role": "assistant", "content": [{"type": "text", "text": "look "}]},
         {"content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
        "stop",
        None,
    ),
    "a tool call without a name is refused": (
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                               "function": {"arguments": "{}"}}]},
        [{"role": "assistant", "tool_calls": [{"index": 0, "id": "c", "type": "function",
                                               "function": {"arguments": "{}"}}]}],
        "tool_calls",
        None,
    ),
}


def whole_body(message, finish):
    return dict(META, object="chat.completion", usage=USAGE,
                choices=[{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}])


def chunks_of(deltas, finish):
    chunks = [dict(META, object="chat.completion.chunk", choices=[{"index": 0, "delta": d}]) for d in deltas]
    chunks.append(dict(META, object="chat.completion.chunk", choices=[{"index": 0, "delta": {}, "finish_reason": finish}]))
    chunks.append(dict(META, object="chat.completion.chunk", choices=[], usage=USAGE))
    return chunks


def sse_bytes(chunks):
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def history_or_refused(acc):
    try:
        return acc.history_message()
    except openai2.APIError as exc:
        assert not isinstance(exc, openai2.APIConnectionError)
        return "refused"


class TestOneAnswerOneShape(unittest.TestCase):
    def three_accumulators(self, message, deltas, finish):
        whole = accumulator_from_completion(whole_body(message, finish))
        streamed = ChatAccumulator()
        decoder = SSEDecoder()
        for chunk in iter_chunk_dicts(decoder.feed(sse_bytes(chunks_of(deltas, finish))) + decoder.close(), streamed):
            streamed.add(chunk)
        transport = MemoryTransport([Reply(body=whole_body(message, finish))])
        client = OpenAI(api_key=KEY, base_url=BASE, transport=transport, max_retries=0)
        stream = client.stream({"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": True},
                               answer_required=False)
        chunks = list(stream.iter_dicts())
        self.assertEqual(len(chunks), 1)
        self.assertEqual(chunks[0]["object"], "chat.completion.chunk")
        return whole, streamed, stream.accumulator

    def test_the_accumulator_gives_one_answer_on_every_path(self):
        for name, (message, deltas, finish, expected) in CASES.items():
            with self.subTest(name):
                whole, streamed, json_body = self.three_accumulators(message, deltas, finish)
                want = "refused" if expected is None else expected
                for label, acc in (("whole", whole), ("streamed", streamed), ("JSON body", json_body)):
                    self.assertEqual(history_or_refused(acc), want, label)
                    self.assertEqual(acc.completion(), whole.completion(), label)
                    self.assertEqual(acc.reasoning, whole.reasoning, label)
                    self.assertTrue(acc.done, label)

    def test_the_json_body_chunk_carries_the_answer_as_a_delta(self):
        message, deltas, finish, _ = CASES["tool calls"]
        _, _, acc = self.three_accumulators(message, deltas, finish)
        chunk = acc.chunk()
        delta = chunk["choices"][0]["delta"]
        self.assertEqual([c["index"] for c in delta["tool_calls"]], [0, 1])
        self.assertEqual(delta["tool_calls"][0]["function"], CALLS[0]["function"])
        self.assertEqual(chunk["choices"][0]["finish_reason"], "tool_calls")
        self.assertEqual(chunk["usage"], USAGE)

    def test_chat_keeps_the_same_history_and_reasoning_on_every_path(self):
        for name, (message, deltas, finish, expected) in CASES.items():
            with self.subTest(name):
                results = []
                for path in ("request", "stream", "stream answered whole"):
                    if path == "stream":
                        reply = Reply(raw_stream=sse_bytes(chunks_of(deltas, finish)))
                    else:
                        reply = Reply(body=whole_body(message, finish))
                    chat = Chat(KEY, base_url=BASE, model="m", transport=MemoryTransport([reply]), max_retries=0)
                    thoughts = []
                    try:
                        if path == "request":
                            text = chat.request("q")
                        else:
                            text = "".join(chat.stream_request("q", on_reasoning=thoughts.append))
                    except openai2.APIError as exc:
                        self.assertNotIsInstance(exc, openai2.APIConnectionError)
                        self.assertNotIn(KEY, str(exc))
                        self.assertEqual(chat.fetch_messages(), [], path)
                        results.append("refused")
                        continue
                    if path != "request":
                        self.assertEqual("".join(thoughts), chat.last_reasoning, path)
                    last = chat.fetch_messages()[-1]
                    self.assertEqual(text, last["content"] or "", path)
                    results.append((last, chat.last_reasoning, chat.last_usage))
                self.assertEqual(results[0], "refused" if expected is None else (expected, results[0][1], USAGE))
                self.assertEqual(results[1], results[0], "streamed")
                self.assertEqual(results[2], results[0], "stream answered whole")

    def test_a_stream_stopped_early_keeps_only_the_text_shown(self):
        acc = ChatAccumulator()
        acc.add({"choices": [{"index": 0, "delta": {"content": "a", "tool_calls": [
            {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{"}}]}}]})
        self.assertEqual(acc.history_message("a"), {"role": "assistant", "content": "a"})

    def test_a_refusal_quotes_the_answer_with_keys_masked(self):
        body = whole_body({"role": "assistant", "content": [{"type": "image_url", "echo": KEY}]}, "stop")
        acc = accumulator_from_completion(body, secrets=[KEY])
        with self.assertRaises(openai2.APIError) as caught:
            acc.history_message()
        self.assertIn("cannot join the conversation (content[0] is a 'image_url' part, not text)", str(caught.exception))
        self.assertNotIn(KEY, str(caught.exception))
        self.assertNotIn(KEY, json.dumps(caught.exception.body))


if __name__ == "__main__":
    unittest.main()
