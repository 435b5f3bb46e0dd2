"""The SSE edge-case table: openai2.sse.SSEDecoder against the WHATWG event-stream rules.

Expected events are written out by hand (several come from the examples in the WHATWG HTML
standard, section "Server-sent events"), never produced by the decoder under test.
"""
import random
import unittest

from openai2.sse import ServerSentEvent, SSEDecoder


def decode(*pieces):
    """Feed the pieces one by one, then close; return (events, decoder)."""
    decoder = SSEDecoder()
    events = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.close())
    return events, decoder


def summary(events):
    return [(e.event, e.data, e.id, e.retry) for e in events]


def ev(data, event="message", id="", retry=None):  # noqa: A002 - mirrors ServerSentEvent
    return (event, data, id, retry)


class WhatwgExamplesTest(unittest.TestCase):
    """The worked examples of the standard."""

    def test_stock_ticker_multiline_data(self):
        events, _ = decode(b"data: YHOO\ndata: +2\ndata: 10\n\n")
        self.assertEqual(summary(events), [ev("YHOO\n+2\n10")])

    def test_four_blocks_with_ids(self):
        stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
        events, decoder = decode(stream)
        self.assertEqual(summary(events), [ev("first event", id="1"), ev("second event"), ev(" third event")])
        self.assertEqual(decoder.comments, 1)
        self.assertEqual(decoder.last_event_id, "")

    def test_end_of_stream_is_not_enough_to_dispatch(self):
        # The same example without its final blank line: the third event never fires.
        events, _ = decode(b"data: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n")
        self.assertEqual(summary(events), [ev("first event", id="1"), ev("second event")])

    def test_empty_data_and_lone_newline(self):
        # "The first block fires events with the data set to the empty string, as would the
        # last block if it was followed by a blank line. The middle block fires an event with
        # the data set to a single newline character. The last block is discarded."
        events, _ = decode(b"data\n\ndata\ndata\n\ndata:")
        self.assertEqual(summary(events), [ev(""), ev("\n")])

    def test_space_after_colon_is_optional(self):
        events, _ = decode(b"data:test\n\ndata: test\n\n")
        self.assertEqual(summary(events), [ev("test"), ev("test")])

    def test_named_events(self):
        events, _ = decode(b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n")
        self.assertEqual(summary(events), [ev("73857293", "add"), ev("2153", "remove"), ev("113411", "add")])


class LineEndingTest(unittest.TestCase):
    EXPECTED = [ev("a\nb", "x"), ev("c")]

    def stream(self, eol):
        return ("event: x" + eol + "data: a" + eol + "data: b" + eol + eol + ": note" + eol + "data: c" + eol + eol).encode()

    def test_lf_crlf_cr(self):
        for eol in ("\n", "\r\n", "\r"):
            with self.subTest(eol=repr(eol)):
                events, decoder = decode(self.stream(eol))
                self.assertEqual(summary(events), self.EXPECTED)
                self.assertEqual(decoder.comments, 1)

    def test_mixed_line_endings(self):
        events, _ = decode(b"event: x\rdata: a\r\ndata: b\n\r\n: note\rdata: c\n\r")
        self.assertEqual(summary(events), self.EXPECTED)

    def test_crlf_split_across_feeds_is_one_line_end(self):
        # Were the split CR and LF two line ends, the blank line would dispatch "a" alone.
        events, _ = decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n")
        self.assertEqual(summary(events), [ev("a\nb")])

    def test_cr_then_empty_feed_then_lf(self):
        events, _ = decode(b"data: a\r", b"", b"\n", b"\r", b"", b"\n")
        self.assertEqual(summary(events), [ev("a")])

    def test_cr_cr_is_a_blank_line(self):
        decoder = SSEDecoder()
        # A CR ending a piece is a line end at once: the event is out before the next read.
        self.assertEqual(summary(decoder.feed(b"data: a\r\r")), [ev("a")])

    def test_cr_lf_cr_lf_in_separate_feeds(self):
        events, _ = decode(b"data: a", b"\r", b"\n", b"\r", b"\n", b"data: b\r\n\r\n")
        self.assertEqual(summary(events), [ev("a"), ev("b")])

    def test_other_unicode_line_breaks_are_data(self):
        # str.splitlines would split at these; the event-stream format does not.
        text = "a\x0bb\x0cc\x1cd\x1de\x1ef\x85g\u2028h\u2029i"
        events, _ = decode(("data: " + text + "\n\n").encode("utf-8"))
        self.assertEqual(summary(events), [ev(text)])


class CommentAndFieldTest(unittest.TestCase):
    def test_comments_are_counted_and_ignored(self):
        events, decoder = decode(b": OPENROUTER PROCESSING\n\n:\n:no space\ndata: x\n: between\n\n")
        self.assertEqual(summary(events), [ev("x")])
        self.assertEqual(decoder.comments, 4)

    def test_field_without_colon(self):
        events, _ = decode(b"data\n\nevent\ndata: y\n\n")
        self.assertEqual(summary(events), [ev(""), ev("y")])

    def test_only_one_space_is_removed(self):
        events, _ = decode(b"data:  two\n\ndata:x\n\ndata:\tt\n\n")
        self.assertEqual(summary(events), [ev(" two"), ev("x"), ev("\tt")])

    def test_unknown_fields_are_ignored(self):
        events, _ = decode(b"foo: bar\ndata: x\nDATA: no\nData: no\n data: no\n\n")
        self.assertEqual(summary(events), [ev("x")])

    def test_colon_in_value_is_kept(self):
        events, _ = decode(b'data: {"a": "b:c"}\n\n')
        self.assertEqual(summary(events), [ev('{"a": "b:c"}')])

    def test_empty_event_name_means_message(self):
        events, _ = decode(b"event:\ndata: x\n\nevent: custom\n\ndata: y\n\n")
        # The event type is reset by every blank line, also when nothing was dispatched.
        self.assertEqual(summary(events), [ev("x"), ev("y")])

    def test_done_is_plain_data_at_this_layer(self):
        events, _ = decode(b"data: [DONE]\n\n")
        self.assertEqual(summary(events), [ev("[DONE]")])


class EmptyEventTest(unittest.TestCase):
    def test_blank_lines_alone_dispatch_nothing(self):
        events, _ = decode(b"\n\n\n\r\n\r\r")
        self.assertEqual(events, [])

    def test_event_without_data_is_not_dispatched(self):
        events, decoder = decode(b"event: ping\n\nid: 7\n\nretry: 5\n\ndata: x\n\n")
        self.assertEqual(summary(events), [ev("x", id="7")])
        self.assertEqual(decoder.retry, 5)

    def test_unfinished_event_discarded_at_close(self):
        for tail in (b"data: x", b"data: x\n", b"data: x\r", b"event: e\ndata: x\n"):
            with self.subTest(tail=tail):
                decoder = SSEDecoder()
                self.assertEqual(summary(decoder.feed(b"data: a\n\n" + tail)), [ev("a")])
                self.assertEqual(decoder.close(), [])

    def test_close_resets_for_reuse(self):
        decoder = SSEDecoder()
        decoder.feed(b"data: half")
        decoder.close()
        self.assertEqual(summary(decoder.feed(b"data: b\n\n")), [ev("b")])


class IdRetryTest(unittest.TestCase):
    def test_id_persists_until_changed(self):
        events, decoder = decode(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\nid:\ndata: d\n\n")
        self.assertEqual([e.id for e in events], ["1", "1", "2", ""])
        self.assertEqual(decoder.last_event_id, "")

    def test_id_with_nul_is_ignored(self):
        events, _ = decode(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
        self.assertEqual([e.id for e in events], ["1", "1"])

    def test_retry_only_ascii_digits(self):
        cases = [
            (b"retry: 1000\n", 1000),
            (b"retry:250\n", 250),
            (b"retry: 0\n", 0),
            (b"retry: 10a\n", None),
            (b"retry: -5\n", None),
            (b"retry: 1.5\n", None),
            (b"retry:\n", None),
            (b"retry\n", None),
            (b"retry:  100\n", None),  # the second space is part of the value
            ("retry: \uff15\n".encode("utf-8"), None),  # a full-width digit is not ASCII
            ("retry: \u00b2\n".encode("utf-8"), None),  # str.isdigit() would accept this
        ]
        for line, expected in cases:
            with self.subTest(line=line):
                events, decoder = decode(line + b"data: x\n\n")
                self.assertEqual(events[0].retry, expected)
                self.assertEqual(decoder.retry, expected)

    def test_invalid_retry_keeps_previous_value(self):
        events, decoder = decode(b"retry: 300\ndata: a\n\nretry: x\ndata: b\n\n")
        self.assertEqual([e.retry for e in events], [300, None])
        self.assertEqual(decoder.retry, 300)


class BomTest(unittest.TestCase):
    BOM = b"\xef\xbb\xbf"

    def test_leading_bom_dropped(self):
        events, _ = decode(self.BOM + b"data: x\n\n")
        self.assertEqual(summary(events), [ev("x")])

    def test_leading_bom_split_across_feeds(self):
        for split in ((b"\xef", b"\xbb", b"\xbfdata: x\n\n"), (b"\xef\xbb", b"\xbfda", b"ta: x\n\n"), (b"\xef", b"\xbb\xbfdata: x\n\n")):
            with self.subTest(split=split):
                events, _ = decode(*split)
                self.assertEqual(summary(events), [ev("x")])

    def test_only_the_first_bom_is_dropped(self):
        # A second BOM becomes part of the field name "\ufeffdata", an unknown field.
        events, _ = decode(self.BOM + self.BOM + b"data: x\n\ndata: y\n\n")
        self.assertEqual(summary(events), [ev("y")])

    def test_bom_later_in_stream_is_not_dropped(self):
        events, _ = decode(b"data: a\n\n" + self.BOM + b"data: b\n\n")
        self.assertEqual(summary(events), [ev("a")])
        events, _ = decode(b"data: " + self.BOM + b"c\n\n")
        self.assertEqual(summary(events), [ev("\ufeffc")])

    def test_bom_prefix_that_is_not_a_bom(self):
        events, _ = decode(b"\xef", b"\xbbdata: x\n\ndata: y\n\n")
        self.assertEqual(summary(events), [ev("y")])


class Utf8Test(unittest.TestCase):
    TEXT = "你好，世界！Ünïcödé 🌍 done"

    def test_split_at_every_byte_boundary(self):
        raw = ("data: " + self.TEXT + "\n\n").encode("utf-8")
        for i in range(len(raw) + 1):
            with self.subTest(split=i):
                events, _ = decode(raw[:i], raw[i:])
                self.assertEqual(summary(events), [ev(self.TEXT)])

    def test_byte_by_byte(self):
        raw = ("data: " + self.TEXT + "\ndata: 第二行\n\n").encode("utf-8")
        events, _ = decode(*[raw[i : i + 1] for i in range(len(raw))])
        self.assertEqual(summary(events), [ev(self.TEXT + "\n第二行")])

    def test_invalid_utf8_becomes_replacement_characters(self):
        events, _ = decode(b"data: a\xffb\xe4\xbd\n\ndata: ok\n\n")
        self.assertEqual(summary(events), [ev("a\ufffdb\ufffd"), ev("ok")])

    def test_bytes_like_input(self):
        decoder = SSEDecoder()
        out = decoder.feed(bytearray(b"data: a\n\n")) + decoder.feed(memoryview(b"data: b\n\n"))
        self.assertEqual(summary(out), [ev("a"), ev("b")])


# A stream touching every rule at once, with its events written out by hand.
RICH_STREAM = (
    b"\xef\xbb\xbf: hello\r\n"
    b"retry: 1500\r\n"
    b"id: first\r\n"
    b"event: greet\r\n"
    b"data: \xe4\xbd\xa0\xe5\xa5\xbd\xf0\x9f\x8c\x8d\r\n"
    b"data:second line\r\n"
    b"\r\n"
    b"data\r"
    b"\r"
    b": keep-alive\n"
    b"\n"
    b"id: bad\x00id\n"
    b"data: {\"choices\":[{\"delta\":{\"content\":\"\xc3\xa9\"}}]}\n"
    b"\n"
    b"event: error\r"
    b"data:  spaced\r\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
    b"data: never dispatched"
)
RICH_EXPECTED = [
    ev("你好🌍\nsecond line", "greet", "first", 1500),
    ev("", id="first"),
    ev('{"choices":[{"delta":{"content":"é"}}]}', id="first"),
    ev(" spaced", "error", "first"),
    ev("[DONE]", id="first"),
]


class ChunkingTest(unittest.TestCase):
    def check(self, pieces):
        events, decoder = decode(*pieces)
        self.assertEqual(summary(events), RICH_EXPECTED)
        self.assertEqual(decoder.comments, 2)

    def test_whole(self):
        self.check([RICH_STREAM])

    def test_every_two_way_split(self):
        for i in range(len(RICH_STREAM) + 1):
            with self.subTest(split=i):
                self.check([RICH_STREAM[:i], RICH_STREAM[i:]])

    def test_every_three_way_split_near_the_start(self):
        # BOM, CRLF and a split UTF-8 character all sit in the first 60 bytes.
        for i in range(60):
            for j in range(i, 60):
                self.check([RICH_STREAM[:i], RICH_STREAM[i:j], RICH_STREAM[j:]])

    def test_byte_by_byte(self):
        self.check([RICH_STREAM[i : i + 1] for i in range(len(RICH_STREAM))])

    def test_random_splits(self):
        rng = random.Random(20240601)
        for _ in range(300):
            cuts = sorted(rng.sample(range(1, len(RICH_STREAM)), rng.randint(1, 25)))
            bounds = [0] + cuts + [len(RICH_STREAM)]
            self.check([RICH_STREAM[a:b] for a, b in zip(bounds, bounds[1:])])

    def test_events_are_returned_by_the_feed_that_completes_them(self):
        decoder = SSEDecoder()
        self.assertEqual(decoder.feed(b"data: a\n"), [])
        self.assertEqual(summary(decoder.feed(b"\ndata: b")), [ev("a")])
        self.assertEqual(summary(decoder.feed(b"\n\n")), [ev("b")])


class LongLineTest(unittest.TestCase):
    """A 1 MB line fed in small pieces.  A decoder that re-scans or re-concatenates its buffer on
    every feed does ~N^2/piece work here (gigabytes for the 64-byte run); a linear one finishes
    in well under a second, so a regression shows as a suite that stops finishing."""

    def payload(self, size):
        unit = "0123456789abcdef你好"  # multi-byte characters land on every possible cut
        text = (unit * (size // len(unit.encode("utf-8")) + 1))
        return text

    def run_pieces(self, text, piece):
        raw = ("data: " + text + "\r\n\r\n").encode("utf-8")
        decoder = SSEDecoder()
        events = []
        for i in range(0, len(raw), piece):
            events.extend(decoder.feed(raw[i : i + piece]))
        return events

    def test_one_megabyte_line(self):
        text = self.payload(1 << 20)
        for piece in (1024, 64, 7):
            with self.subTest(piece=piece):
                events = self.run_pieces(text, piece)
                self.assertEqual(len(events), 1)
                self.assertEqual(len(events[0].data), len(text))
                self.assertTrue(events[0].data == text)

    def test_quarter_megabyte_line_byte_by_byte(self):
        text = self.payload(1 << 18)
        events = self.run_pieces(text, 1)
        self.assertEqual(len(events), 1)
        self.assertTrue(events[0].data == text)


class ServerSentEventTest(unittest.TestCase):
    def test_defaults_and_repr(self):
        event = ServerSentEvent(data="x")
        self.assertEqual((event.event, event.data, event.id, event.retry), ("message", "x", "", None))
        self.assertIn("data='x'", repr(event))
        self.assertEqual(event, ServerSentEvent("message", "x"))
        self.assertNotEqual(event, ServerSentEvent("message", "y"))
        with self.assertRaises(AttributeError):
            event.other = 1  # __slots__


if __name__ == "__main__":
    unittest.main()
