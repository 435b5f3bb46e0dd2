"""The chat layer over SSE: iter_chunk_dicts and ChatAccumulator (openai2.completion)."""
import json
import random
import unittest

from openai2.completion import ChatAccumulator, accumulator_from_completion, iter_chunk_dicts
from openai2.errors import APIError
from openai2.sse import ServerSentEvent, SSEDecoder


def chunk(delta=None, finish_reason=None, index=0, **top):
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": index, "delta": delta or {}, "finish_reason": finish_reason}]}
    body.update(top)
    return body


def events_of(*datas, event="message"):
    return [ServerSentEvent(event, d) for d in datas]


def accumulate(chunks):
    acc = ChatAccumulator()
    deltas = [acc.add(c) for c in chunks]
    return acc, deltas


class IterChunkDictsTest(unittest.TestCase):
    def test_parses_and_stops_at_done(self):
        acc = ChatAccumulator()
        source = iter(events_of('{"a": 1}', '{"b": 2}', "[DONE]", '{"c": 3}'))
        out = list(iter_chunk_dicts(source, acc))
        self.assertEqual(out, [{"a": 1}, {"b": 2}])
        self.assertTrue(acc.done)
        # Nothing after [DONE] was consumed.
        self.assertEqual(next(source).data, '{"c": 3}')

    def test_without_done_the_accumulator_is_not_done(self):
        acc = ChatAccumulator()
        self.assertEqual(list(iter_chunk_dicts(events_of('{"a": 1}'), acc)), [{"a": 1}])
        self.assertFalse(acc.done)
        self.assertFalse(acc.complete)

    def test_done_without_accumulator_and_with_whitespace(self):
        self.assertEqual(list(iter_chunk_dicts(events_of(" [DONE] ", '{"x": 1}'))), [])

    def test_error_payload_raises_with_fields(self):
        payload = {"error": {"message": "Token limit reached", "code": 400, "type": "limit", "param": "max_tokens"}, "usage": {"total_tokens": 5}}
        gen = iter_chunk_dicts(events_of('{"choices": []}', json.dumps(payload)))
        self.assertEqual(next(gen), {"choices": []})
        with self.assertRaises(APIError) as cm:
            next(gen)
        err = cm.exception
        self.assertEqual((err.message, err.code, err.type, err.param), ("Token limit reached", 400, "limit", "max_tokens"))
        self.assertEqual(err.body, payload)
        self.assertEqual(str(err), "Token limit reached")

    def test_null_or_empty_error_does_not_raise(self):
        out = list(iter_chunk_dicts(events_of('{"error": null, "n": 1}', '{"error": {}, "n": 2}')))
        self.assertEqual([c["n"] for c in out], [1, 2])

    def test_error_as_string(self):
        with self.assertRaises(APIError) as cm:
            list(iter_chunk_dicts(events_of('{"error": "overloaded"}')))
        self.assertEqual(cm.exception.message, "overloaded")

    def test_error_event_with_json(self):
        data = json.dumps({"error": {"message": "Tool call validation failed", "type": "invalid_request_error", "code": "tool_use_failed", "status_code": 400}})
        with self.assertRaises(APIError) as cm:
            list(iter_chunk_dicts(events_of(data, event="error")))
        err = cm.exception
        self.assertEqual((err.message, err.code, err.type, err.param), ("Tool call validation failed", "tool_use_failed", "invalid_request_error", None))
        self.assertEqual(err.body["error"]["status_code"], 400)

    def test_error_event_with_text_or_bare_object(self):
        with self.assertRaises(APIError) as cm:
            list(iter_chunk_dicts(events_of("upstream went away", event="error")))
        self.assertIn("upstream went away", cm.exception.message)
        with self.assertRaises(APIError) as cm:
            list(iter_chunk_dicts(events_of('{"message": "bare", "code": "x"}', event="error")))
        self.assertEqual((cm.exception.message, cm.exception.code), ("bare", "x"))

    def test_error_without_message_still_says_something(self):
        with self.assertRaises(APIError) as cm:
            list(iter_chunk_dicts(events_of('{"error": {"code": 502}}')))
        self.assertIn("502", cm.exception.message)
        self.assertEqual(cm.exception.code, 502)

    def test_invalid_json_names_the_excerpt(self):
        with self.assertRaises(APIError) as cm:
            list(iter_chunk_dicts(events_of('{"choices": [', )))
        self.assertIn('{"choices": [', cm.exception.message)
        with self.assertRaises(APIError) as cm:
            list(iter_chunk_dicts(events_of("<html>502 Bad Gateway</html>")))
        self.assertIn("502 Bad Gateway", cm.exception.message)

    def test_json_that_is_not_an_object(self):
        for data in ("[1, 2]", "42", '"text"', "null"):
            with self.subTest(data=data):
                with self.assertRaises(APIError):
                    list(iter_chunk_dicts(events_of(data)))

    def test_leading_whitespace_object_is_parsed(self):
        self.assertEqual(list(iter_chunk_dicts(events_of(' \n{"a": 1}'))), [{"a": 1}])

    def test_parses_exactly_like_json_loads(self):
        # the fast path (the C scanner on CPython) must agree with json.loads on every edge
        for data in ('{"a": 1}  ', '{"a": 1}\n', '{"a": NaN, "b": -Infinity}', '{"t": "\\u00e9\u00e8 \\ud83d\\ude00"}',
                     '{"a": {"b": [1, 2.5, true, null]}, "a": 2}', '{"n": 12345678901234567890, "f": 1e400}'):
            with self.subTest(data=data):
                got = list(iter_chunk_dicts(events_of(data)))
                self.assertEqual(repr(got), repr([json.loads(data)]))
        for data in ('{"a": 1} {"b": 2}', '{"a": 1}x', '{"a": }', '{"a": 1', "{'a': 1}", '{"a": 1}]'):
            with self.subTest(data=data):
                with self.assertRaises(APIError) as cm:
                    list(iter_chunk_dicts(events_of(data)))
                self.assertIn("not JSON", cm.exception.message)

    def test_many_chunks_with_distinct_keys_parse_independently(self):
        # the scanner memoises keys within one document; nothing may carry over between chunks
        datas = ['{"k%d": %d, "choices": []}' % (i, i) for i in range(2000)]
        out = list(iter_chunk_dicts(events_of(*datas)))
        self.assertEqual(out, [json.loads(d) for d in datas])


class AccumulatorFastPathTest(unittest.TestCase):
    """The common one-choice content/role chunk has a fast path in add(); it must merge exactly
    like the general loop, which a delta with an extra null key always takes."""

    def shapes(self):
        return [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}, system_fingerprint="fp_1", created=7),
            chunk({"role": "assistant"}),
            chunk({"content": ""}),
            chunk({}),
            chunk({"content": " there", "role": "assistant"}),
            chunk({"content": "!"}, index=None),
            chunk({"content": "?"}, index=1),
            chunk({"content": ["x"]}),
            {"id": "late", "choices": [{"delta": {"content": " no index"}}]},
            {"choices": [{"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {"content": "b"}}]},
            {"choices": [{"index": 0, "delta": {"role": "", "content": "c"}, "finish_reason": None}], "usage": {"total_tokens": 3}},
            chunk({}, "stop"),
        ]

    def test_fast_path_merges_like_the_general_loop(self):
        fast, fast_deltas = accumulate(self.shapes())
        slow_chunks = self.shapes()
        for c in slow_chunks:
            for choice in c["choices"]:
                choice["delta"]["refusal"] = None  # an ignored key: forces the general loop
        slow, slow_deltas = accumulate(slow_chunks)
        self.assertEqual(fast_deltas, slow_deltas)
        self.assertEqual(fast.completion(), slow.completion())
        self.assertEqual(fast.other_choices, slow.other_choices)
        self.assertEqual((fast.role, fast.finish_reason, fast.complete, fast.chunks), (slow.role, slow.finish_reason, slow.complete, slow.chunks))
        self.assertEqual(fast.content, "Hello there!x no indexac")
        self.assertEqual((fast.id, fast.model, fast.system_fingerprint, fast.created), ("chatcmpl-1", "m", "fp_1", None))

    def test_metadata_keeps_being_looked_for_until_known(self):
        acc = ChatAccumulator()
        acc.add({"choices": [{"index": 0, "delta": {"content": "a"}}]})
        acc.add({"id": "", "model": "m1", "choices": []})
        acc.add({"id": "c1", "created": 5, "choices": []})
        acc.add({"id": "c2", "model": "m2", "system_fingerprint": "fp", "choices": []})
        acc.add({"id": "c3", "model": "m3", "system_fingerprint": "fp3", "created": 9, "choices": []})
        self.assertEqual((acc.id, acc.model, acc.system_fingerprint, acc.created), ("c1", "m1", "fp", 5))


class AccumulatorTextTest(unittest.TestCase):
    def test_content_and_deltas(self):
        acc, deltas = accumulate([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop")])
        self.assertEqual(deltas, ["", "Hel", "lo", ""])
        self.assertEqual(acc.content, "Hello")
        self.assertEqual(acc.role, "assistant")
        self.assertEqual(acc.finish_reason, "stop")
        self.assertTrue(acc.complete)
        self.assertFalse(acc.done)
        self.assertEqual(acc.chunks, 4)

    def test_null_content_and_missing_delta(self):
        acc, deltas = accumulate([chunk({"content": None}), {"choices": [{"index": 0}]}, chunk({"content": "x"})])
        self.assertEqual(deltas, ["", "", "x"])
        self.assertEqual(acc.content, "x")

    def test_incomplete_without_finish_or_done(self):
        acc, _ = accumulate([chunk({"content": "partial"})])
        self.assertFalse(acc.complete)

    def test_reasoning_content_and_reasoning_kept_apart(self):
        acc, deltas = accumulate([
            chunk({"reasoning_content": "think ", "content": None}),
            chunk({"reasoning": "more"}),
            chunk({"reasoning_content": None, "content": "answer"}),
        ])
        self.assertEqual(acc.reasoning, "think more")
        self.assertEqual(acc.content, "answer")
        self.assertEqual(deltas, ["", "", "answer"])

    def test_reasoning_sent_under_both_names_counted_once(self):
        acc, _ = accumulate([chunk({"reasoning": "a", "reasoning_content": "a"}), chunk({"reasoning_content": "b", "reasoning": "b"})])
        self.assertEqual(acc.reasoning, "ab")

    def test_reasoning_that_is_not_a_string_is_ignored(self):
        acc, _ = accumulate([chunk({"reasoning": {"effort": "high"}}), chunk({"reasoning": "ok"})])
        self.assertEqual(acc.reasoning, "ok")

    def test_mistral_content_arrays(self):
        acc, deltas = accumulate([
            chunk({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "Okay"}]}]}),
            chunk({"content": [{"type": "thinking", "thinking": [{"type": "text", "text": ", so"}, {"type": "text", "text": " yes"}]}]}),
            chunk({"content": [{"type": "text", "text": "Answer"}]}),
            chunk({"content": " done"}),
        ])
        self.assertEqual(acc.reasoning, "Okay, so yes")
        self.assertEqual(acc.content, "Answer done")
        self.assertEqual(deltas, ["", "", "Answer", " done"])

    def test_refusal(self):
        acc, _ = accumulate([chunk({"role": "assistant", "content": None, "refusal": ""}), chunk({"refusal": "I can't"}), chunk({"refusal": " help."}), chunk({}, "stop")])
        self.assertEqual(acc.refusal, "I can't help.")
        self.assertEqual(acc.content, "")

    def test_first_non_empty_id_and_model(self):
        acc, _ = accumulate([
            {"id": "", "model": "", "choices": [], "prompt_filter_results": []},
            chunk({"content": "a"}, id="real", model="gpt", created=7, system_fingerprint="fp"),
            chunk({"content": "b"}, id="other", model="other"),
        ])
        self.assertEqual((acc.id, acc.model, acc.created, acc.system_fingerprint), ("real", "gpt", 7, "fp"))

    def test_many_pieces_join_once(self):
        acc = ChatAccumulator()
        pieces = ["p%d " % i for i in range(50000)]
        for p in pieces:
            acc.add(chunk({"content": p}))
        self.assertEqual(acc.content, "".join(pieces))
        acc.add(chunk({"content": "end"}))
        self.assertEqual(acc.content, "".join(pieces) + "end")


class AccumulatorUsageTest(unittest.TestCase):
    def test_usage_from_empty_choices_chunk(self):
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        acc, deltas = accumulate([chunk({"content": "hi"}, usage=None), chunk({}, "stop", usage=None), {"id": "x", "choices": [], "usage": usage}])
        self.assertEqual(acc.usage, usage)
        self.assertEqual(acc.content, "hi")
        self.assertEqual(deltas[-1], "")

    def test_last_non_null_usage_wins(self):
        acc, _ = accumulate([chunk({}, usage={"total_tokens": 1}), chunk({}, usage={"total_tokens": 9}), chunk({}, usage=None)])
        self.assertEqual(acc.usage, {"total_tokens": 9})

    def test_x_groq_usage_fallback(self):
        acc, _ = accumulate([chunk({"content": "a"}, x_groq={"id": "req"}), chunk({}, "stop", x_groq={"id": "req", "usage": {"total_tokens": 4}})])
        self.assertEqual(acc.usage, {"total_tokens": 4})

    def test_top_level_usage_preferred_over_x_groq(self):
        acc, _ = accumulate([chunk({}, "stop", usage={"total_tokens": 1}, x_groq={"usage": {"total_tokens": 2}})])
        self.assertEqual(acc.usage, {"total_tokens": 1})


class AccumulatorToolCallTest(unittest.TestCase):
    def call(self, index=None, id=None, name=None, arguments=None, type=None, **extra):  # noqa: A002
        out = dict(extra)
        if index is not None:
            out["index"] = index
        if id is not None:
            out["id"] = id
        if type is not None:
            out["type"] = type
        fn = {}
        if name is not None:
            fn["name"] = name
        if arguments is not None:
            fn["arguments"] = arguments
        if fn:
            out["function"] = fn
        return chunk({"tool_calls": [out]})

    def test_fragments_merged_by_index(self):
        acc, _ = accumulate([
            self.call(0, "call_a", "get_weather", "", "function"),
            self.call(1, "call_b", "get_time", "", "function"),
            self.call(0, arguments='{"city":'),
            self.call(1, arguments="{}"),
            self.call(0, arguments=' "Paris"}'),
            chunk({}, "tool_calls"),
        ])
        self.assertEqual(acc.tool_calls, [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ])
        self.assertEqual(acc.finish_reason, "tool_calls")

    def test_index_not_starting_at_zero(self):
        acc, _ = accumulate([self.call(1, "toolu_1", "read_file", "", "function"), self.call(1, arguments='{"p": 1}')])
        self.assertEqual(acc.tool_calls, [{"id": "toolu_1", "type": "function", "function": {"name": "read_file", "arguments": '{"p": 1}'}}])

    def test_missing_index_mistral(self):
        # Whole calls without index: a new id starts a new call; no id continues the last one.
        acc, _ = accumulate([
            self.call(id="A1", name="f", arguments='{"x": 1}'),
            self.call(id="B2", name="g", arguments="{"),
            self.call(arguments="}"),
            self.call(id="B2", arguments=""),
        ])
        self.assertEqual(acc.tool_calls, [
            {"id": "A1", "type": None, "function": {"name": "f", "arguments": '{"x": 1}'}},
            {"id": "B2", "type": None, "function": {"name": "g", "arguments": "{}"}},
        ])

    def test_empty_later_id_does_not_overwrite(self):
        acc, _ = accumulate([self.call(0, "call_x", "weather", "", "function"), self.call(0, "", arguments='{"a"', type="function"), self.call(0, "", arguments=": 1}", type="function")])
        self.assertEqual(acc.tool_calls, [{"id": "call_x", "type": "function", "function": {"name": "weather", "arguments": '{"a": 1}'}}])

    def test_repeated_id_and_name_not_concatenated(self):
        acc, _ = accumulate([self.call(0, "0", "llm_version", "", "function"), self.call(0, "0", "llm_version", "{}", "function")])
        self.assertEqual(acc.tool_calls, [{"id": "0", "type": "function", "function": {"name": "llm_version", "arguments": "{}"}}])

    def test_name_in_fragments_is_concatenated(self):
        acc, _ = accumulate([self.call(0, "c", "get_", ""), self.call(0, name="weather")])
        self.assertEqual(acc.tool_calls[0]["function"]["name"], "get_weather")

    def test_index_reused_for_a_different_call(self):
        acc, _ = accumulate([self.call(0, "c1", "f", "{}", "function"), self.call(0, "c2", "g", "{}", "function"), self.call(0, arguments="")])
        self.assertEqual([(c["id"], c["function"]["name"]) for c in acc.tool_calls], [("c1", "f"), ("c2", "g")])

    def test_extra_fields_kept(self):
        sig = {"google": {"thought_signature": "abc"}}
        acc, _ = accumulate([self.call(0, "c", "f", "{}", "function", extra_content=sig)])
        self.assertEqual(acc.tool_calls[0]["extra_content"], sig)

    def test_long_arguments_in_many_fragments(self):
        fragments = ['{"text": "'] + ["line %d\\n" % i for i in range(20000)] + ['"}']
        acc = ChatAccumulator()
        acc.add(self.call(0, "c", "write_file", "", "function"))
        for i, frag in enumerate(fragments):
            acc.add(self.call(0, arguments=frag))
            if i == 10:
                self.assertEqual(acc.tool_calls[0]["function"]["arguments"], "".join(fragments[:11]))
        self.assertEqual(acc.tool_calls[0]["function"]["arguments"], "".join(fragments))
        self.assertEqual(json.loads(acc.tool_calls[0]["function"]["arguments"])["text"][:7], "line 0\n")

    def test_wire_keys_cannot_reach_internal_state(self):
        acc, _ = accumulate([self.call(0, "c", "f", "{}", "function", _args=["x"], _index=5), self.call(0, arguments="")])
        self.assertEqual(acc.tool_calls, [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}])

    def test_message_with_tool_calls(self):
        acc, _ = accumulate([chunk({"role": "assistant", "content": None}), self.call(0, "c", "f", "{}", "function"), chunk({}, "tool_calls")])
        self.assertEqual(acc.message(), {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
        # The returned dicts are copies: changing them leaves the accumulator alone.
        acc.tool_calls[0]["function"]["name"] = "zzz"
        self.assertEqual(acc.tool_calls[0]["function"]["name"], "f")


class AccumulatorChoicesTest(unittest.TestCase):
    def test_n_greater_than_one(self):
        acc, deltas = accumulate([
            chunk({"role": "assistant", "content": ""}, index=0),
            chunk({"role": "assistant", "content": ""}, index=1),
            chunk({"content": "A"}, index=0),
            chunk({"content": "B"}, index=1),
            chunk({"content": "b"}, index=1),
            chunk({}, "stop", index=1),
            chunk({}, "length", index=0),
            {"id": "x", "choices": [{"index": 2, "delta": {"reasoning_content": "r", "content": "C"}, "finish_reason": "stop"}, {"index": 0, "delta": {"content": "a"}}]},
        ])
        self.assertEqual(acc.content, "Aa")
        self.assertEqual(deltas, ["", "", "A", "", "", "", "", "a"])
        self.assertEqual(acc.finish_reason, "length")
        others = acc.other_choices
        self.assertEqual(sorted(others), [1, 2])
        self.assertEqual((others[1]["content"], others[1]["finish_reason"]), ("Bb", "stop"))
        self.assertEqual((others[2]["content"], others[2]["reasoning"]), ("C", "r"))

    def test_finish_on_other_choice_makes_complete(self):
        acc, _ = accumulate([chunk({"content": "x"}, index=0), chunk({}, "stop", index=1)])
        self.assertTrue(acc.complete)

    def test_completion_shape(self):
        acc, _ = accumulate([
            chunk({"role": "assistant", "reasoning_content": "hmm"}, created=5),
            chunk({"content": "Hi"}),
            chunk({"content": "B"}, index=1),
            chunk({}, "stop"),
            {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
        ])
        full = acc.completion()
        self.assertEqual(full["object"], "chat.completion")
        self.assertEqual((full["id"], full["model"], full["created"], full["usage"]), ("chatcmpl-1", "m", 5, {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}))
        self.assertEqual(full["choices"][0], {"index": 0, "message": {"role": "assistant", "content": "Hi", "refusal": None, "reasoning_content": "hmm"}, "logprobs": None, "finish_reason": "stop"})
        self.assertEqual(full["choices"][1]["message"]["content"], "B")
        self.assertEqual(acc.message(), {"role": "assistant", "content": "Hi"})


class FromCompletionTest(unittest.TestCase):
    def test_plain_completion(self):
        body = {
            "id": "c1", "model": "m", "created": 3, "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hi", "reasoning_content": "r0"}, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": "Yo", "reasoning": "r1"}, "finish_reason": "length"},
            ],
            "usage": {"total_tokens": 9},
        }
        acc = accumulator_from_completion(body)
        self.assertEqual((acc.content, acc.reasoning, acc.finish_reason, acc.usage, acc.id, acc.model), ("Hi", "r0", "stop", {"total_tokens": 9}, "c1", "m"))
        self.assertEqual((acc.other_choices[1]["content"], acc.other_choices[1]["reasoning"], acc.other_choices[1]["finish_reason"]), ("Yo", "r1", "length"))
        self.assertTrue(acc.done and acc.complete)

    def test_tool_calls_with_index_and_empty_id(self):
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"index": 0, "id": "", "type": "function", "function": {"name": "b", "arguments": "{\"x\": 1}"}},
        ]}, "finish_reason": "tool_calls"}]}
        acc = accumulator_from_completion(body)
        self.assertEqual(acc.tool_calls, [
            {"id": "", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "", "type": "function", "function": {"name": "b", "arguments": '{"x": 1}'}},
        ])
        self.assertIsNone(acc.message()["content"])

    def test_refusal_and_content_list_and_x_groq(self):
        body = {"choices": [{"index": 0, "message": {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "t"}]}, {"type": "text", "text": "ok"}], "refusal": "no"}, "finish_reason": "stop"}],
                "x_groq": {"usage": {"total_tokens": 2}}}
        acc = accumulator_from_completion(body)
        self.assertEqual((acc.content, acc.reasoning, acc.refusal, acc.usage), ("ok", "t", "no", {"total_tokens": 2}))

    def test_error_body_raises(self):
        with self.assertRaises(APIError) as cm:
            accumulator_from_completion({"error": {"message": "nope", "code": "x"}})
        self.assertEqual((cm.exception.message, cm.exception.code), ("nope", "x"))
        with self.assertRaises(APIError):
            accumulator_from_completion([1])  # type: ignore[arg-type]


class SurrogateRepairTest(unittest.TestCase):
    """An emoji sent as two JSON escapes in two chunks (relays that cut by UTF-16 units)."""

    def stream(self, *datas):
        acc = ChatAccumulator()
        pieces = [acc.add(c) for c in iter_chunk_dicts(events_of(*datas), acc)]
        return acc, pieces

    def content_chunk(self, escaped, finish="null"):
        return '{"choices": [{"index": 0, "delta": {"content": "%s"}, "finish_reason": %s}]}' % (escaped, finish)

    def test_pair_split_across_two_chunks_is_one_character(self):
        acc, pieces = self.stream(self.content_chunk("hi \\ud83d"), self.content_chunk("\\ude00!"), "[DONE]")
        self.assertEqual(acc.content, "hi \U0001f600!")
        self.assertEqual("".join(pieces), acc.content)
        self.assertEqual(pieces, ["hi ", "\U0001f600!"])
        acc.content.encode("utf-8")
        json.dumps(acc.completion(), ensure_ascii=False).encode("utf-8")

    def test_pieces_never_end_with_a_high_surrogate(self):
        # every emoji of a text cut after each UTF-16 unit, one chunk per unit
        text = "a\U0001f600b\U0001f30d\u4f60\U0001f600"
        units = json.dumps(text)[1:-1].replace("\\ud", "|\\ud").split("|")
        acc, pieces = self.stream(*[self.content_chunk(u) for u in units if u], "[DONE]")
        for piece in pieces:
            if piece:
                self.assertFalse("\ud800" <= piece[-1] <= "\udbff", repr(piece))
        self.assertEqual(acc.content, text)
        self.assertEqual("".join(pieces), text)

    def test_lone_surrogates_become_replacement_characters(self):
        cases = [
            (["\\ude00x"], "\ufffdx"),  # a low surrogate with nothing held
            (["a\\ud83db"], "a\ufffdb"),  # a high one in the middle
            (["a\\ude00\\ud83db"], "a\ufffd\ufffdb"),  # reversed pair
            (["x\\ud83d", "y"], "x\ufffdy"),  # held, then not completed
            (["x\\ud83d", "\\ud83d\\ude00"], "x\ufffd\U0001f600"),  # held, then a whole pair
            (["\\ud83d", "\\ud83d", "\\ude00"], "\ufffd\U0001f600"),
        ]
        for units, want in cases:
            with self.subTest(units=units):
                acc, pieces = self.stream(*[self.content_chunk(u) for u in units], "[DONE]")
                self.assertEqual(acc.content, want)
                self.assertEqual("".join(pieces), want)
                acc.content.encode("utf-8")

    def test_high_surrogate_at_the_end_becomes_a_replacement_character(self):
        # with the finish_reason in the same chunk, in a later chunk, or never (flush())
        acc, pieces = self.stream(self.content_chunk("end\\ud83d", '"stop"'))
        self.assertEqual((pieces, acc.content), (["end\ufffd"], "end\ufffd"))
        acc, pieces = self.stream(self.content_chunk("end\\ud83d"), self.content_chunk("", '"stop"'))
        self.assertEqual(("".join(pieces), acc.content), ("end\ufffd", "end\ufffd"))
        acc, pieces = self.stream(self.content_chunk("end\\ud83d"), "[DONE]")
        self.assertEqual(acc.content, "end\ufffd")  # the content never holds a lone surrogate
        pieces.append(acc.flush())
        self.assertEqual("".join(pieces), "end\ufffd")
        self.assertEqual(acc.content, "end\ufffd")

    def test_reasoning_refusal_and_tool_calls_are_repaired_too(self):
        def delta(d):
            return json.dumps({"choices": [{"index": 0, "delta": d}]}).replace("\\\\u", "\\u")

        acc, _ = self.stream(
            delta({"reasoning_content": "r\\ud83d"}), delta({"reasoning_content": "\\ude00"}),
            delta({"refusal": "no\\ud83d"}), delta({"refusal": "\\ude00"}),
            delta({"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "f\\ud83d", "arguments": "{\"e\": \"\\ud83d"}}]}),
            delta({"tool_calls": [{"index": 0, "function": {"name": "\\ude00", "arguments": "\\ude00\"}"}}]}),
            delta({"content": "x\\ud83d"}), '{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}',
        )
        self.assertEqual(acc.reasoning, "r\U0001f600")
        self.assertEqual(acc.refusal, "no\U0001f600")
        self.assertEqual(acc.tool_calls[0]["function"], {"name": "f\U0001f600", "arguments": '{"e": "\U0001f600"}'})
        self.assertEqual(acc.content, "x\ufffd")
        for value in (acc.message(), acc.completion()):
            json.dumps(value, ensure_ascii=False).encode("utf-8")

    def test_whole_completion_with_lone_surrogates(self):
        body = json.loads('{"choices": [{"index": 0, "message": {"role": "assistant", "content": "a\\ud83d", "refusal": "\\ude00r"}, "finish_reason": "stop"}]}')
        acc = accumulator_from_completion(body)
        self.assertEqual((acc.content, acc.refusal), ("a\ufffd", "\ufffdr"))
        json.dumps(acc.completion(), ensure_ascii=False).encode("utf-8")


def _shape_chunk(choice=None, **top):
    body = {"id": "c", "model": "m", "choices": [choice] if choice is not None else []}
    body.update(top)
    return body


class MalformedChunkTest(unittest.TestCase):
    """Chunks of the wrong shape: APIError where the answer would be wrong, ignored elsewhere;
    whole completions are judged the same way."""

    RAISES = [
        ("choices a string", {"choices": "abc"}, "choices is str"),
        ("choices an object", {"choices": {"a": 1}}, "choices is dict"),
        ("a choice that is a number", {"choices": [1]}, "a choice is int"),
        ("a choice that is null", {"choices": [None, {"index": 1}]}, "a choice is null"),
        ("delta a string", _shape_chunk({"index": 0, "delta": "hello"}), "a delta is str"),
        ("delta a list", _shape_chunk({"index": 0, "delta": ["hello"]}), "a delta is list"),
        ("index a list", _shape_chunk({"index": [1], "delta": {"content": "x"}}), "a choice index is list"),
        ("index an object", _shape_chunk({"index": {"i": 1}, "delta": {"content": "x"}}), "a choice index is dict"),
        ("index a float", _shape_chunk({"index": 1.5, "delta": {"content": "x"}}), "a choice index is float"),
        ("content a number", _shape_chunk({"index": 0, "delta": {"content": 5}}), "content is int"),
        ("content an object", _shape_chunk({"index": 0, "delta": {"content": {"text": "x"}}}), "content is dict"),
        ("refusal a list", _shape_chunk({"index": 0, "delta": {"refusal": ["no"]}}), "refusal is list"),
        ("tool_calls an object", _shape_chunk({"index": 0, "delta": {"tool_calls": {"index": 0}}}), "tool_calls is dict"),
        ("tool_calls a string", _shape_chunk({"index": 0, "delta": {"tool_calls": "f()"}}), "tool_calls is str"),
        ("a tool call that is a string", _shape_chunk({"index": 0, "delta": {"tool_calls": ["f"]}}), "a tool call is str"),
        ("a tool call's function a string", _shape_chunk({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "f"}]}}), "function is str"),
        ("a tool call's name a number", _shape_chunk({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": 3}}]}}), "name is int"),
    ]

    IGNORED = [
        ("usage a string", _shape_chunk({"index": 0, "delta": {"content": "x"}}, usage="lots")),
        ("usage a list", _shape_chunk({"index": 0, "delta": {"content": "x"}}, usage=[1, 2])),
        ("x_groq usage a number", _shape_chunk({"index": 0, "delta": {"content": "x"}}, x_groq={"usage": 5})),
        ("finish_reason a number", _shape_chunk({"index": 0, "delta": {"content": "x"}, "finish_reason": 1})),
        ("finish_reason an object", _shape_chunk({"index": 0, "delta": {"content": "x"}, "finish_reason": {"type": "stop"}})),
        ("role a number", _shape_chunk({"index": 0, "delta": {"role": 1, "content": "x"}})),
        ("role a list", _shape_chunk({"index": 0, "delta": {"role": ["assistant"], "content": "x"}})),
        ("reasoning an object", _shape_chunk({"index": 0, "delta": {"reasoning": {"effort": "high"}, "content": "x"}})),
        ("id, model, created of the wrong type", _shape_chunk({"index": 0, "delta": {"content": "x"}}, id=["a"], model={"m": 1}, created="now")),
        ("logprobs a string", _shape_chunk({"index": 0, "delta": {"content": "x"}, "logprobs": "none"})),
        ("delta null", _shape_chunk({"index": 0, "delta": None, "finish_reason": None}, choices=[{"index": 0, "delta": None}, {"index": 0, "delta": {"content": "x"}}])),
        ("index as digits", _shape_chunk({"index": "0", "delta": {"content": "x"}})),
    ]

    def test_shapes_that_would_make_the_answer_wrong_raise(self):
        key = "sk-" + "k" * 40
        for label, bad, what in self.RAISES:
            with self.subTest(label):
                acc = ChatAccumulator(secrets=[key])
                acc.add(_shape_chunk({"index": 0, "delta": {"content": "ok"}}))
                bad = dict(bad, echo=key)
                with self.assertRaises(APIError) as cm:
                    acc.add(bad)
                message = cm.exception.message
                self.assertTrue(message.startswith("The stream sent a chunk that is not a chat.completion.chunk: "), message)
                self.assertIn(what, message)
                self.assertNotIn(key, message + json.dumps(cm.exception.body))

    def test_the_same_shapes_raise_through_iter_chunk_dicts_and_the_stream(self):
        acc = ChatAccumulator()
        with self.assertRaises(APIError):
            for c in iter_chunk_dicts(events_of('{"choices": "abc"}'), acc):
                acc.add(c)

    def test_shapes_that_can_be_ignored_are(self):
        for label, chunk_ in self.IGNORED:
            with self.subTest(label):
                acc = ChatAccumulator()
                piece = acc.add(chunk_)
                self.assertEqual((piece, acc.content), ("x", "x"))
                self.assertIsNone(acc.usage)
                self.assertIsNone(acc.finish_reason)
                self.assertEqual(acc.role, "assistant")
                self.assertEqual(acc.reasoning, "")
                self.assertIn(acc.id, ("c", None))
                self.assertIn(acc.model, ("m", None))
                self.assertIsNone(acc.created)
                self.assertEqual(acc.completion()["choices"][0]["logprobs"], None)

    def test_whole_completions_are_judged_like_chunks(self):
        def as_completion(c):
            body = dict(c)
            if isinstance(body.get("choices"), list):
                body["choices"] = [
                    dict(ch, message=ch.pop("delta")) if isinstance(ch, dict) and "delta" in ch else ch
                    for ch in (dict(ch) if isinstance(ch, dict) else ch for ch in body["choices"])
                ]
            return body

        key = "sk-" + "q" * 40
        for label, bad, what in self.RAISES:
            with self.subTest(label):
                with self.assertRaises(APIError) as cm:
                    accumulator_from_completion(dict(as_completion(bad), echo=key), secrets=[key])
                self.assertIn("not a chat.completion: ", cm.exception.message)
                self.assertIn(what.replace("a delta", "a message"), cm.exception.message)
                self.assertNotIn(key, cm.exception.message + json.dumps(cm.exception.body))
        for label, good in self.IGNORED:
            with self.subTest(label):
                acc = accumulator_from_completion(as_completion(good))
                self.assertEqual((acc.content, acc.finish_reason, acc.usage, acc.role), ("x", None, None, "assistant"))


class DeepJSONTest(unittest.TestCase):
    def test_deeply_nested_stream_data_is_an_api_error(self):
        deep = "[" * 100000 + "]" * 100000
        for data, event in (('{"a": %s}' % deep, "message"), (deep, "message"), ('{"error": %s}' % deep, "error"), (deep, "error")):
            with self.subTest(start=data[:6], event=event):
                with self.assertRaises(APIError) as cm:
                    list(iter_chunk_dicts(events_of(data, event=event)))
                self.assertLess(len(cm.exception.message), 400)
        # the stream goes on parsing normally afterwards (the scanner kept no state)
        self.assertEqual(list(iter_chunk_dicts(events_of('{"a": [1]}'))), [{"a": [1]}])


class StreamExcerptMaskingTest(unittest.TestCase):
    KEY = "sk-proj-" + "Z" * 20 + "Y" * 16  # 44 characters

    def test_key_at_the_cut_of_a_non_json_excerpt_is_masked_first(self):
        for offset in range(90, 125, 3):
            data = "x" * offset + " " + self.KEY + " tail"
            for kwargs in ({"secrets": [self.KEY]}, {}):
                acc = ChatAccumulator(secrets=[self.KEY])
                with self.subTest(offset=offset, kwargs=kwargs):
                    with self.assertRaises(APIError) as cm:
                        list(iter_chunk_dicts(events_of(data), acc if not kwargs else None, **kwargs))
                    shown = cm.exception.message + str(cm.exception.body)
                    self.assertNotIn(self.KEY[:12], shown)  # not even the start of it
                    self.assertNotIn("ZZZZZZZZ", shown)

    def test_stream_error_excerpts_are_masked_first(self):
        for payload in ('{"error": {"code": 5, "detail": "%s"}}', '"%s is not valid"'):
            data = payload % ("y" * 100 + self.KEY)
            with self.subTest(payload=payload):
                with self.assertRaises(APIError) as cm:
                    list(iter_chunk_dicts(events_of(data, event="error"), secrets=[self.KEY]))
                shown = cm.exception.message + json.dumps(cm.exception.body)
                self.assertNotIn("ZZZZZZZZ", shown)


class AssistantMessageTest(unittest.TestCase):
    def test_message_role_is_assistant_whatever_the_stream_announced(self):
        for role in ("model", "tool", "user", "assistant", None):
            with self.subTest(role=role):
                acc, _ = accumulate([chunk({"role": role, "content": "hi"}), chunk({"refusal": "r"}), chunk({}, "stop")])
                self.assertEqual(acc.role, role or "assistant")
                self.assertEqual(acc.message(), {"role": "assistant", "content": "hi", "refusal": "r"})
                self.assertEqual(acc.completion()["choices"][0]["message"]["role"], "assistant")

    def test_message_has_only_standard_fields(self):
        acc, _ = accumulate([
            chunk({"role": "model", "content": None, "reasoning_content": "think"}),
            {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}}]},
            chunk({}, "tool_calls"),
        ])
        message = acc.message()
        self.assertEqual(message, {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
        self.assertIsNone(acc.tool_calls[0]["type"])  # as the server sent it


# --- the random-chunking property ---------------------------------------------------------

_WORDS = ["Hello", " world", "你好", "，", "世界", " 🌍", "\n", "Ünï", " \"quoted\"", "\\", "tab\t", " ", "é", "data: fake", ": not a comment", "\r"]


def generate_stream(rng):
    """A random but realistic stream plus the truth it encodes: (bytes, truth dict)."""
    truth = {"content": "", "reasoning": "", "tool_calls": [], "usage": None, "finish_reason": None}
    chunks = []

    def base(**kw):
        c = {"id": "chatcmpl-r", "object": "chat.completion.chunk", "created": 1, "model": "gen"}
        c.update(kw)
        return c

    usage_null = rng.random() < 0.5
    reasoning_key = rng.choice(["reasoning_content", "reasoning"])

    def add(delta, finish=None):
        c = base(choices=[{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}])
        if usage_null:
            c["usage"] = None
        chunks.append(c)

    add({"role": "assistant", "content": ""})
    for _ in range(rng.randint(0, 8)):
        piece = "".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
        truth["reasoning"] += piece
        add({reasoning_key: piece, "content": None})
    for _ in range(rng.randint(0, 12)):
        piece = "".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
        truth["content"] += piece
        add({"content": piece})
    for n in range(rng.randint(0, 2)):
        call_id = "call_%d_%d" % (n, rng.randint(0, 10 ** 6))
        name = rng.choice(["get_weather", "查询", "f"])
        args = json.dumps({"city": rng.choice(["Paris", "北京", "São Paulo"]), "n": n}, ensure_ascii=rng.random() < 0.5)
        truth["tool_calls"].append({"id": call_id, "type": "function", "function": {"name": name, "arguments": args}})
        cuts = sorted(rng.sample(range(1, len(args)), min(3, len(args) - 1)))
        frags = [args[a:b] for a, b in zip([0] + cuts, cuts + [len(args)])]
        style = rng.choice(["openai", "empty-id", "repeat"])
        add({"tool_calls": [{"index": n, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]})
        for frag in frags:
            call = {"index": n, "function": {"arguments": frag}}
            if style == "empty-id":
                call.update(id="", type="function")
            elif style == "repeat":
                call.update(id=call_id, type="function")
                call["function"]["name"] = name
            add({"tool_calls": [call]})
    finish = rng.choice(["stop", "length", "tool_calls" if truth["tool_calls"] else "stop"])
    truth["finish_reason"] = finish
    add({}, finish)
    if rng.random() < 0.7:
        truth["usage"] = {"prompt_tokens": rng.randint(1, 99), "completion_tokens": rng.randint(1, 99), "total_tokens": 0}
        chunks.append(base(choices=[], usage=truth["usage"]))

    out = []
    if rng.random() < 0.2:
        out.append("\ufeff")
    for c in chunks:
        eol = rng.choice(["\n", "\r\n", "\r"])
        if rng.random() < 0.2:
            out.append(": keep-alive" + eol)
        if rng.random() < 0.2:
            # Multi-line data: JSON split at structural points, one data line each.
            lines = json.dumps(c, ensure_ascii=False, indent=1).split("\n")
            out.append("".join("data:" + (" " if rng.random() < 0.5 else "") + line + eol for line in lines))
        else:
            out.append("data: " + json.dumps(c, ensure_ascii=rng.random() < 0.3) + eol)
        out.append(eol)
    eol = rng.choice(["\n", "\r\n", "\r"])
    out.append("data: [DONE]" + eol + eol)
    return "".join(out).encode("utf-8"), truth


def run_stream(raw, rng):
    acc = ChatAccumulator()
    decoder = SSEDecoder()
    text = []
    i = 0
    while i < len(raw):
        size = rng.choice([1, 2, 3, 5, 17, 64, 300, 4096])
        for c in iter_chunk_dicts(decoder.feed(raw[i : i + size]), acc):
            text.append(acc.add(c))
        i += size
        if acc.done:
            break
    for c in iter_chunk_dicts(decoder.close(), acc):
        text.append(acc.add(c))
    return acc, "".join(text)


class RandomStreamPropertyTest(unittest.TestCase):
    def test_random_streams_random_chunkings(self):
        rng = random.Random(8675309)
        for case in range(150):
            raw, truth = generate_stream(rng)
            for attempt in range(3):
                with self.subTest(case=case, attempt=attempt):
                    acc, streamed = run_stream(raw, rng)
                    self.assertTrue(acc.done)
                    self.assertTrue(acc.complete)
                    self.assertEqual(acc.content, truth["content"])
                    self.assertEqual(streamed, truth["content"])
                    self.assertEqual(acc.reasoning, truth["reasoning"])
                    self.assertEqual(acc.tool_calls, truth["tool_calls"])
                    self.assertEqual(acc.finish_reason, truth["finish_reason"])
                    self.assertEqual(acc.usage, truth["usage"])
                    self.assertEqual(acc.refusal, "")


def _delta_chunk(delta, finish=None):
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class AccumulatorRareFieldsTest(unittest.TestCase):
    def test_legacy_function_call_deltas_merge_into_message_and_completion(self):
        acc = ChatAccumulator()
        acc.add(_delta_chunk({"role": "assistant", "content": None, "function_call": {"name": "get", "arguments": ""}}))
        acc.add(_delta_chunk({"function_call": {"name": "get", "arguments": '{"q": "\ud83d'}}))
        acc.add(_delta_chunk({"function_call": {"arguments": '\ude00"}'}}, finish="function_call"))
        call = {"name": "get", "arguments": '{"q": "\U0001F600"}'}
        self.assertEqual(acc.message(), {"role": "assistant", "content": None, "function_call": call})
        choice = acc.completion()["choices"][0]
        self.assertEqual(choice["message"]["function_call"], call)
        self.assertIsNone(choice["message"]["content"])
        self.assertEqual(choice["finish_reason"], "function_call")

    def test_name_and_all_of_audio_reach_the_completion_and_only_the_audio_id_the_message(self):
        acc = ChatAccumulator()
        acc.add(_delta_chunk({"role": "assistant", "name": "bot", "audio": {"id": "au_1", "transcript": "he"}}))
        acc.add(_delta_chunk({"audio": {"data": "AA", "transcript": "llo", "expires_at": 5}}))
        acc.add(_delta_chunk({"audio": {"id": "au_1", "data": "BB"}}, finish="stop"))
        message = acc.completion()["choices"][0]["message"]
        self.assertEqual(message["name"], "bot")
        self.assertEqual(message["audio"], {"id": "au_1", "transcript": "hello", "data": "AABB", "expires_at": 5})
        self.assertEqual(acc.message(), {"role": "assistant", "content": "", "name": "bot", "audio": {"id": "au_1"}})

    def test_content_parts_that_are_not_text_stay_in_the_completion(self):
        image = {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
        acc = ChatAccumulator()
        acc.add(_delta_chunk({"content": [{"type": "text", "text": "look "}]}))
        acc.add(_delta_chunk({"content": [image]}, finish="stop"))
        self.assertEqual(acc.content, "look ")
        self.assertEqual(acc.completion()["choices"][0]["message"]["content"],
                         [{"type": "text", "text": "look "}, image])

    def test_a_whole_completion_carries_the_same_rare_fields(self):
        body = {"choices": [{"index": 0, "finish_reason": "function_call", "message": {
            "role": "assistant", "content": None, "name": "bot", "function_call": {"name": "f", "arguments": {"a": 1}}}}]}
        self.assertEqual(accumulator_from_completion(body).message(), {
            "role": "assistant", "content": None, "name": "bot",
            "function_call": {"name": "f", "arguments": '{"a": 1}'}})


if __name__ == "__main__":
    unittest.main()
