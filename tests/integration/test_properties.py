"""Property tests with hypothesis: the SSE decoder gives the same events for any chunking of a
byte stream; the history buffer keeps its invariants under any sequence of commits, rollbacks,
pins, unpins, limit changes, trims and archive round-trips (MessageBuffer directly, and Chat with
dump/load through a real file)."""
from __future__ import annotations

import json
import os
import tempfile
import unittest

from openai2 import Chat
from openai2.history import MessageBuffer, from_archive
from openai2.sse import SSEDecoder
from tests.integration.support import figure

# hypothesis keeps caches in ./.hypothesis unless told otherwise; keep the work tree clean.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "openai2-hypothesis"))

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    # No example database in the work tree (.hypothesis/ is not git-ignored): seeded, repeatable.
    settings.register_profile("openai2", database=None, derandomize=True)
    settings.load_profile("openai2")
except ImportError:  # pragma: no cover - make integration installs it
    st = None

EXAMPLES = int(os.environ.get("OPENAI2_HYPOTHESIS_EXAMPLES", "400"))


def _decode(chunks) -> tuple:
    dec = SSEDecoder()
    events = []
    for c in chunks:
        events.extend(dec.feed(c))
    events.extend(dec.close())
    return [(e.event, e.data, e.id, e.retry) for e in events], dec.comments


if st is not None:
    _text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)
    _line = st.one_of(
        st.tuples(st.just("data"), _text),
        st.tuples(st.just("event"), _text),
        st.tuples(st.just("id"), _text),
        st.tuples(st.just("retry"), st.one_of(st.integers(0, 10 ** 6).map(str), _text)),
        st.tuples(st.just(""), _text),  # a comment
        st.tuples(st.sampled_from(["x", "dat", "data "]), _text),  # unknown fields
        st.tuples(st.just("blank"), st.just("")),
    )
    _stream = st.builds(
        lambda lines, le, space, bom: (b"\xef\xbb\xbf" if bom else b"") + "".join(
            (le if f == "blank" else (":" + v if f == "" else f + ":" + (" " if space else "") + v) + le) for f, v in lines
        ).encode("utf-8"),
        st.lists(_line, max_size=30), st.sampled_from(["\n", "\r\n", "\r"]), st.booleans(), st.booleans(),
    )


@unittest.skipIf(st is None, "hypothesis is not installed (make integration installs it)")
class SSEChunking(unittest.TestCase):
    @settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_stream, st.lists(st.integers(0, 4000), max_size=40))
    def test_any_chunking_gives_the_same_events(self, body: bytes, cuts) -> None:
        whole = _decode([body])
        points = sorted({c % (len(body) + 1) for c in cuts})
        pieces = [body[a:b] for a, b in zip([0] + points, points + [len(body)])]
        self.assertEqual(_decode(pieces), whole)
        self.assertEqual(_decode([body[i:i + 1] for i in range(len(body))]), whole)
        figure("fuzz: SSE byte streams x chunkings")

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(st.lists(st.text(max_size=20), min_size=1, max_size=10), st.sampled_from(["\n", "\r\n", "\r"]),
           st.integers(1, 7))
    def test_data_round_trips(self, datas, le, step) -> None:
        datas = [d.replace("\r", "").replace("\n", "") for d in datas]
        body = "".join("data: %s%s%s" % (d, le, le) for d in datas).encode("utf-8")
        events, _ = _decode([body[i:i + step] for i in range(0, len(body), step)])
        self.assertEqual([e[1] for e in events], datas)
        figure("fuzz: SSE data round trips")


# -- the history buffer ------------------------------------------------------------------------

class _Model:
    """The documented trimming rule, restated independently over (id, pinned) pairs."""

    def __init__(self) -> None:
        self.items: list = []  # [id, role, pinned]
        self.max_count = None

    def trim(self, protect: int) -> None:
        k = self.max_count
        if not k or len(self.items) <= k:
            return
        excess = len(self.items) - k
        end = len(self.items) - protect
        keep = []
        for i, item in enumerate(self.items):
            if i < end and excess and not item[2]:
                excess -= 1
                continue
            keep.append(item)
        self.items = keep


def _ops():
    return st.lists(st.one_of(
        st.tuples(st.just("commit"), st.integers(1, 3)),
        st.tuples(st.just("rollback"), st.integers(0, 3)),
        st.tuples(st.just("pin"), st.integers(-20, 20)),
        st.tuples(st.just("unpin"), st.integers(-20, 20)),
        st.tuples(st.just("limit"), st.one_of(st.none(), st.integers(0, 12))),
        st.tuples(st.just("trim"), st.just(0)),
        st.tuples(st.just("archive"), st.just(0)),
    ), max_size=60)


@unittest.skipIf(st is None, "hypothesis is not installed (make integration installs it)")
class HistoryInvariants(unittest.TestCase):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_ops())
    def test_message_buffer(self, ops) -> None:
        buf = MessageBuffer()
        model = _Model()
        counter = [0]

        def msg(role):
            counter[0] += 1
            return {"role": role, "content": "m%d" % counter[0]}, counter[0]

        for op, arg in ops:
            before = [(m["content"], p) for m, p in zip(buf.messages(), [i in buf.pinned_indexes() for i in range(len(buf))])]
            if op == "commit":
                new = [msg("user")] + [msg("assistant") for _ in range(arg - 1)]
                buf.commit([m for m, _ in new])
                model.items += [["m%d" % n, m["role"], False] for m, n in new]
                model.trim(protect=len(new))
                k = model.max_count
                pinned_old = sum(1 for _, p in before if p)
                if k:  # MsgMaxCount respected except where pins + the latest exchange exceed it
                    self.assertLessEqual(len(buf), max(k, pinned_old + len(new)))
                self.assertEqual([m["content"] for m in buf.messages()[-len(new):]], ["m%d" % n for _, n in new])
            elif op == "rollback":
                buf.rollback(arg)
                starts = [i for i, it in enumerate(model.items) if it[1] == "user"]
                if arg and starts:
                    cut = starts[-arg] if arg <= len(starts) else starts[0]
                    del model.items[cut:]
            elif op in ("pin", "unpin"):
                n = len(model.items)
                if -n <= arg < n:
                    getattr(buf, op)(arg)
                    model.items[arg][2] = op == "pin"
                else:
                    with self.assertRaises(IndexError):
                        getattr(buf, op)(arg)
            elif op == "limit":
                buf.max_count = arg
                model.max_count = arg or None
            elif op == "trim":
                buf.trim()
                model.trim(protect=0)
                if model.max_count:
                    self.assertLessEqual(len(buf), max(model.max_count, sum(1 for _, p in before if p)))
            elif op == "archive":
                data = json.loads(json.dumps(buf.to_archive()))
                messages, pins = from_archive(data)
                copy = MessageBuffer()
                copy.extend(messages, pinned=pins)
                self.assertEqual(copy.messages(), buf.messages())
                self.assertEqual(copy.pinned_indexes(), buf.pinned_indexes())
            # invariants after every operation
            self.assertEqual([m["content"] for m in buf.messages()], [it[0] for it in model.items])
            self.assertEqual(buf.pinned_indexes(), [i for i, it in enumerate(model.items) if it[2]])
            if op in ("commit", "trim"):  # trimming never removes a pinned message
                after = {m["content"] for m in buf.messages()}
                self.assertTrue({c for c, p in before if p} <= after)
        figure("fuzz: history operation sequences")
        figure("fuzz: history operations", len(ops))

    @settings(max_examples=max(20, EXAMPLES // 8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_ops())
    def test_chat_dump_load_round_trips(self, ops) -> None:
        chat = Chat(api_key="sk-none-0000000000", model="m")
        folder = tempfile.mkdtemp(prefix="openai2-prop-")
        path = os.path.join(folder, "chat.json")
        try:
            n = 0
            for op, arg in ops:
                if op == "commit":
                    n += 1
                    chat.add_dialogs({"role": "user", "content": "q%d ✓" % n}, {"role": "assistant", "content": "a%d 😀" % n})
                elif op == "rollback":
                    chat.rollback(arg)
                elif op in ("pin", "unpin") and -len(chat) <= arg < len(chat):
                    getattr(chat, op)(arg)
                elif op == "limit":
                    chat.MsgMaxCount = arg
                elif op == "archive":
                    chat.dump(path)
                    other = Chat(api_key="sk-none-0000000000", model="m")
                    other.load(path)
                    self.assertEqual(other.fetch_messages(), chat.fetch_messages())
                    self.assertEqual(other.pinned_indexes(), chat.pinned_indexes())
                    self.assertEqual([f for f in os.listdir(folder) if f != "chat.json"], [])
        finally:
            for f in os.listdir(folder):
                os.unlink(os.path.join(folder, f))
            os.rmdir(folder)
        figure("fuzz: Chat dump/load sequences")


if __name__ == "__main__":
    unittest.main()
