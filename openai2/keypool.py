"""AKPool: a round-robin pool of API keys shared safely across threads.

``itertools.cycle`` behind a ``threading.Lock`` (the original design), plus what "the system
makes full use of every key" needs: a key answered with 429 cools down until its
``Retry-After`` (or a short default) has passed and is skipped meanwhile; a key answered with
401/403 is set aside for good.  The pool only keeps this state; the client decides when to
call :meth:`AKPool.mark_rate_limited` / :meth:`AKPool.mark_invalid` and how long to wait: when
every usable key is cooling down, ``OpenAI`` waits for the first one to be free (at most 60 s
and never longer than the request's read timeout; beyond that it raises ``RateLimitError`` at
once, saying when a key is free).

Keys never appear unmasked in a repr, a str or an error (``sk-…abcd``).  The same key may be
in several pools; pools never share state.
"""

from __future__ import annotations

import itertools
import threading
import time

from .common import TYPE_CHECKING, mask_key
from .errors import AuthenticationError

if TYPE_CHECKING:
    from typing import Callable, Iterable, Iterator

#: How many masked keys repr() lists before "…".
_POOL_REPR_KEYS = 3


def _pool_check_keys(keys: object) -> list[str]:
    if isinstance(keys, (str, bytes)):
        raise ValueError(
            "AKPool takes a list of keys, e.g. AKPool(['sk-...', 'sk-...']), not a single %s; "
            "for one key pass api_key='sk-...' directly" % ("string" if isinstance(keys, str) else "bytes")
        )
    from collections.abc import Iterable as _PoolIterable

    if not isinstance(keys, _PoolIterable):
        raise ValueError("AKPool takes a list of keys, e.g. AKPool(['sk-...', 'sk-...']), not %s" % type(keys).__name__)
    items: list[str] = []
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise ValueError("AKPool: key %d must be a string, not %s" % (i, type(key).__name__))
        if not key:
            raise ValueError("AKPool: key %d is an empty string" % i)
        if key != key.strip() or any(c.isspace() or ord(c) < 32 for c in key):
            raise ValueError(
                "AKPool: key %d (%s) contains whitespace or a control character; remove it "
                "(a newline copied from a file?)" % (i, mask_key(key.strip()))
            )
        items.append(key)
    if not items:
        raise ValueError("AKPool needs at least one key; the list of keys is empty")
    return items


def _pool_check_seconds(value: object, what: str, clamp: bool) -> float:
    # clamp: a negative Retry-After (clock skew) just means "now"; a negative setting is a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError("%s must be a number of seconds, not %r" % (what, value))
    if value < 0 and not clamp:
        raise ValueError("%s must be 0 or more seconds, not %r" % (what, value))
    return max(0.0, float(value))


class PoolSnapshot:
    """A frozen view of an :class:`AKPool` from one key's side, taken by :meth:`AKPool.snapshot`.

    It is what the client's retry policy (``openai2.client.decide_retry``, a pure function)
    needs to decide what to do after that key failed, without touching the pool or a clock.

    :ivar size: how many keys the pool has (duplicates counted)
    :ivar others_usable: how many of them are other keys not set aside (copies of this key do
        not count: setting a key aside sets all its copies aside)
    :ivar others_wait: seconds until one of those other keys is out of its cool-down (0.0 when
        one is free now), or None when there is no other usable key
    :ivar key_wait: seconds this key itself still cools down (0.0 normally: it was just drawn)
    :ivar cooldown: the pool's default cool-down, for a 429 without ``Retry-After``
    """

    __slots__ = ("size", "others_usable", "others_wait", "key_wait", "cooldown")
    size: int
    others_usable: int
    others_wait: float | None
    key_wait: float
    cooldown: float

    def __init__(
        self, size: int, others_usable: int, others_wait: float | None, key_wait: float = 0.0, cooldown: float = 5.0
    ) -> None:
        for name, value in zip(self.__slots__, (size, others_usable, others_wait, key_wait, cooldown)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PoolSnapshot is frozen")

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PoolSnapshot) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "PoolSnapshot(%s)" % ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__)


class AKPool:
    """A pool of API keys used in turn, one key per request.

    :param keys: a non-empty iterable of non-empty strings (duplicates allowed: a key listed
        twice is used twice as often)
    :param cooldown: seconds a rate-limited key is skipped when the server gave no
        ``Retry-After``
    :param clock: a monotonic clock (injectable for tests)
    :raises ValueError: no keys, a key that is not a non-empty string, a single string
        passed instead of a list, a key with whitespace in it, a negative or non-numeric
        cooldown
    """

    def __init__(
        self,
        keys: Iterable[str],
        *,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = _pool_check_keys(keys)
        self._known = frozenset(self._keys)
        self._cooldown = _pool_check_seconds(cooldown, "AKPool cooldown", clamp=False)
        self._clock = clock
        self._lock = threading.Lock()
        self._cycle: Iterator[int] = itertools.cycle(range(len(self._keys)))
        self._until: dict[str, float] = {}  # key -> clock time its cool-down ends
        self._aside: dict[str, int] = {}  # key -> status that set it aside (insertion ordered)

    # -- drawing ----------------------------------------------------------------------------

    def next_key(self) -> str:
        """The next key in turn, skipping keys set aside or cooling down.

        When every usable key is cooling down, the one whose cool-down ends first is
        returned; :meth:`seconds_until_available` tells how long to wait before using it (the
        client waits that long before sending, or refuses at once when it is too long).

        :returns: a raw key (send it; never log or show it)
        :raises AuthenticationError: every key was set aside (401/403); the message lists
            the keys masked with their statuses
        """
        with self._lock:
            now = self._clock()
            aside, until, keys = self._aside, self._until, self._keys
            best: str | None = None
            best_until = 0.0
            for _ in range(len(keys)):
                key = keys[next(self._cycle)]
                if key in aside:
                    continue
                ends = until.get(key)
                if ends is None or ends <= now:
                    if ends is not None:
                        del until[key]
                    return key
                if best is None or ends < best_until:
                    best, best_until = key, ends
            if best is not None:
                return best
            raise self._all_rejected_error()

    def _all_rejected_error(self) -> AuthenticationError:
        listed = ", ".join("%s (%d)" % (mask_key(k), s) for k, s in self._aside.items())
        return AuthenticationError(
            "every key in the pool was rejected: %s" % listed,
            status_code=401,
            hint="Check the keys (a revoked key, or one for another provider?) and replace the "
            "pool with reset_api_key().",
        )

    def seconds_until_available(self) -> float:
        """Seconds until some usable key is out of its cool-down (0.0 if one is ready now).

        Also 0.0 when every key is set aside (``next_key()`` then raises).
        """
        with self._lock:
            now = self._clock()
            soonest: float | None = None
            for key in self._keys:
                if key in self._aside:
                    continue
                ends = self._until.get(key)
                if ends is None or ends <= now:
                    return 0.0
                if soonest is None or ends < soonest:
                    soonest = ends
            return 0.0 if soonest is None else soonest - now

    def snapshot(self, key: str) -> PoolSnapshot:
        """The pool as seen from ``key`` right now, frozen (see :class:`PoolSnapshot`).

        The client takes one after ``key`` failed and hands it to its retry policy, which
        decides from it alone whether to move on to another key, wait for one, or give up;
        the pool is not changed.

        :param key: the key just used (a key not in the pool is seen as "other than all")
        """
        with self._lock:
            now = self._clock()
            others = 0
            soonest: float | None = None
            for k in self._keys:
                if k == key or k in self._aside:
                    continue
                others += 1
                wait = max(0.0, self._until.get(k, now) - now)
                if soonest is None or wait < soonest:
                    soonest = wait
            own = max(0.0, self._until.get(key, now) - now)
            return PoolSnapshot(len(self._keys), others, soonest, own, self._cooldown)

    # -- feedback from the client -----------------------------------------------------------

    def mark_rate_limited(self, key: str, retry_after: float | None = None) -> bool:
        """Skip ``key`` for ``retry_after`` seconds (the pool's ``cooldown`` when None).

        A later mark never shortens a longer cool-down already in force.

        :returns: False (and nothing changes) when ``key`` is not in this pool
        :raises ValueError: retry_after is not a number (a negative one counts as 0)
        """
        seconds = self._cooldown if retry_after is None else _pool_check_seconds(retry_after, "retry_after", clamp=True)
        with self._lock:
            if key not in self._known:
                return False
            ends = self._clock() + seconds
            if ends > self._until.get(key, float("-inf")):
                self._until[key] = ends
            return True

    def mark_invalid(self, key: str, status: int = 401) -> bool:
        """Set ``key`` aside for good (the server answered 401 or 403 to it).

        :param status: the HTTP status, reported by :attr:`set_aside` and the final error
        :returns: False (and nothing changes) when ``key`` is not in this pool
        """
        with self._lock:
            if key not in self._known:
                return False
            self._aside.setdefault(key, int(status))
            self._until.pop(key, None)
            return True

    # -- inspection -------------------------------------------------------------------------

    @property
    def usable_count(self) -> int:
        """How many of the pool's keys (duplicates counted) are not set aside."""
        with self._lock:
            return sum(1 for k in self._keys if k not in self._aside)

    @property
    def set_aside(self) -> list[tuple[str, int]]:
        """Keys set aside, masked, with the status that did it, in the order it happened."""
        with self._lock:
            return [(mask_key(k), s) for k, s in self._aside.items()]

    def keys(self) -> list[str]:
        """The raw keys, in pool order (a copy).  For masking secrets in errors; never show them."""
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        shown = ", ".join(mask_key(k) for k in self._keys[:_POOL_REPR_KEYS])
        if len(self._keys) > _POOL_REPR_KEYS:
            shown += ", …"
        extra = ""
        with self._lock:
            if self._aside:
                extra = "; %d set aside" % len(self._aside)
        return "AKPool(%d key%s: %s%s)" % (len(self._keys), "" if len(self._keys) == 1 else "s", shown, extra)

    __str__ = __repr__
