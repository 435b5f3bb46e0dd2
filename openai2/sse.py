"""Server-sent events, decoded by hand: a sans-IO decoder from bytes to :class:`ServerSentEvent`.

The decoder never touches the network: the transport hands it whatever bytes arrived
(``feed``) and, at the end of the body, calls ``close``.  It follows the WHATWG
"event stream interpretation" rules:

* lines end at CR, LF or CRLF (a CRLF split across two reads is one line end); ``str.splitlines``
  is never used, since it also splits on VT, FF, U+2028 and friends;
* a leading UTF-8 byte order mark is dropped (only at the very start of the stream);
* bytes are decoded as UTF-8 per complete line, so a character split across reads comes out whole;
* ``:`` lines are comments (counted in :attr:`SSEDecoder.comments`, otherwise ignored);
* ``field:value`` with one optional space after the colon; a line without a colon is a field
  with an empty value; unknown fields are ignored;
* several ``data`` lines are joined with ``\\n``; a blank line dispatches the event, unless no
  ``data`` field was seen; an unfinished event at end of stream is discarded;
* ``id`` containing NUL is ignored; ``retry`` is used only when it is all ASCII digits.

Time is linear in the input even for a very long line fed in tiny pieces: an unfinished line is
kept as a list of pieces and joined once, when its line end arrives.
"""

from __future__ import annotations

_SSE_BOM = b"\xef\xbb\xbf"
_SSE_DIGITS = frozenset("0123456789")


class ServerSentEvent:
    """One dispatched event.

    :ivar event: the event type (``"message"`` when the stream named none)
    :ivar data: the data lines joined with ``\\n``
    :ivar id: the last event id in force when the event was dispatched (``""`` if none)
    :ivar retry: the reconnection time in ms given in this event's block, or None
    """

    __slots__ = ("event", "data", "id", "retry")

    def __init__(self, event: str = "message", data: str = "", id: str = "", retry: int | None = None) -> None:  # noqa: A002
        self.event = event
        self.data = data
        self.id = id
        self.retry = retry

    def __repr__(self) -> str:
        parts = ["event=%r" % self.event, "data=%r" % self.data]
        if self.id:
            parts.append("id=%r" % self.id)
        if self.retry is not None:
            parts.append("retry=%r" % self.retry)
        return "ServerSentEvent(%s)" % ", ".join(parts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return (self.event, self.data, self.id, self.retry) == (other.event, other.data, other.id, other.retry)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


class SSEDecoder:
    """Incremental, sans-IO event-stream decoder.

    Feed it the bytes as they arrive; each call returns the events completed by those bytes::

        decoder = SSEDecoder()
        for data in response.iter_bytes():
            for event in decoder.feed(data):
                ...
        decoder.close()   # end of stream: an unfinished event is discarded

    :ivar comments: how many comment lines (``: ...``) have been seen
    :ivar last_event_id: the last event id buffer (``id`` field), ``""`` when none
    :ivar retry: the latest valid ``retry`` value in milliseconds, or None
    """

    __slots__ = (
        "comments",
        "last_event_id",
        "retry",
        "_parts",
        "_cr",
        "_bom",
        "_data",
        "_event",
        "_id",
        "_block_retry",
    )

    def __init__(self) -> None:
        self.comments = 0
        self.last_event_id = ""
        self.retry: int | None = None
        # Pieces of the unfinished line (bytes, no line end yet): joined once, when it ends.
        self._parts: list[bytes] = []
        # The previous piece ended with CR: an LF starting the next piece belongs to that CR.
        self._cr = False
        # Bytes seen so far while we cannot yet tell whether the stream starts with a BOM;
        # None once that is decided.
        self._bom: bytes | None = b""
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self._block_retry: int | None = None

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Decode more bytes.

        :param data: the next piece of the body, of any size (bytes-like)
        :returns: the events completed by this piece, in order (often none)
        """
        if data.__class__ is not bytes:
            data = bytes(data)
        if self._bom is not None or self._cr or b"\r" in data:
            data = self._sse_prepare(data)
        end = data.rfind(b"\n")
        parts = self._parts
        if end < 0:
            if data:
                parts.append(data)
            return []
        if parts:
            parts.append(data[:end])
            block = b"".join(parts)
            self._parts = parts = []
        else:
            block = data[:end]
        if end + 1 < len(data):
            parts.append(data[end + 1 :])
        # Decoding the complete lines in one go equals decoding them one by one: an LF byte
        # never occurs inside a UTF-8 sequence and always ends an invalid one.
        events: list[ServerSentEvent] = []
        buf = self._data
        for line in block.decode("utf-8", "replace").split("\n"):
            if not line:
                self.last_event_id = self._id
                if buf:
                    events.append(
                        ServerSentEvent(
                            self._event or "message",
                            buf[0] if len(buf) == 1 else "\n".join(buf),
                            self._id,
                            self._block_retry,
                        )
                    )
                    buf = self._data = []
                if self._event:
                    self._event = ""
                self._block_retry = None
            elif line[:6] == "data: ":
                buf.append(line[6:])
            else:
                self._sse_field(line)
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: discard any unfinished line and event (WHATWG: never dispatched).

        :returns: always an empty list (kept for symmetry with :meth:`feed`)
        """
        self._parts = []
        self._cr = False
        self._bom = None
        self._data = []
        self._event = ""
        self._block_retry = None
        return []

    def _sse_prepare(self, data: bytes) -> bytes:
        """The rare cases: a possible BOM at the start, and CR or CRLF line ends."""
        if self._bom is not None:
            head = self._bom + data
            if len(head) < 3 and _SSE_BOM.startswith(head):
                self._bom = head
                return b""
            self._bom = None
            data = head[3:] if head[:3] == _SSE_BOM else head
        if data and (self._cr or b"\r" in data):
            # Make every line end an LF.  A CR that ends this piece is a line end at once;
            # an LF opening the next piece then completes that CRLF and is dropped.
            if self._cr and data[:1] == b"\n":
                data = data[1:]
            self._cr = data[-1:] == b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def _sse_field(self, line: str) -> None:
        if line[0] == ":":
            self.comments += 1
            return
        colon = line.find(":")
        if colon < 0:
            name, value = line, ""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == " ":
                value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self._id = value
        elif name == "retry":
            if value and all(ch in _SSE_DIGITS for ch in value):
                self.retry = self._block_retry = int(value)
