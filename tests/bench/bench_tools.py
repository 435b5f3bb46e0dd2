"""The tool loop's own overhead per round, without the network and without the tools' time.

    python3 tests/bench/bench_tools.py [--reps N]

The loop's own work per round is timed directly: take an answer's tool call, parse and validate
its arguments against the schema, run a no-op tool, make the ``tool`` message and the next body.
For scale, whole exchanges on MemoryTransport (answers built in memory, no sockets): one with a
tool round, and two plain ones (the same two requests).  Also the cost of building a tool's
schema from its type hints and docstring (done once, when a Chat is created).  Medians over the
repetitions; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from openai2 import Chat, tool_schema  # noqa: E402
from openai2.testing import MemoryTransport, Reply  # noqa: E402
from openai2.tools import ToolLoop, ToolSet  # noqa: E402


def get_weather(city: str, days: int = 1, unit: str = "celsius") -> str:
    """Get the weather forecast for a city.

    Args:
        city: the city's name
        days: how many days ahead
        unit: celsius or fahrenheit
    """
    return "sunny"


CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "days": 2})}}


def timed(fn, reps):
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args(argv)

    def answer(request):  # a tool call when the last message is the user's, else text
        return Reply(tool_calls=[CALL]) if request.messages[-1]["role"] == "user" and request.json.get("tools") else "y"

    key, base = "sk-bench-0123456789abcdef", "https://bench.test/v1"
    plain_chat = Chat(key, base_url=base, model="m", transport=MemoryTransport(handler=answer))
    tool_chat = Chat(key, base_url=base, model="m", transport=MemoryTransport(handler=answer), tools=[get_weather])

    def plain():
        plain_chat.request("a")
        plain_chat.request("b")
        plain_chat.clear()

    def tool_round():
        tool_chat.request("a")
        tool_chat.clear()

    def schema():
        tool_schema(get_weather)

    toolset = ToolSet([get_weather])
    first = {"model": "m", "messages": [{"role": "user", "content": "a"}]}

    def loop_round():  # exactly what a driver does between two requests
        assistant = {"role": "assistant", "content": None, "tool_calls": [dict(CALL)]}
        loop = ToolLoop(toolset)
        calls = loop.take(assistant)
        loop.run(calls)
        loop.end_round(assistant, calls)
        loop.next_body(first)

    for fn in (plain, tool_round, schema, loop_round):  # warm up imports and caches
        fn()
    rows = [
        ("the loop's own work per round (take, validate, run a no-op tool, answer, next body)", timed(loop_round, args.reps)),
        ("tool_schema(fn) from hints and docstring (once, when a Chat is made)", timed(schema, args.reps)),
        ("for scale: one exchange with one tool round (2 requests)", timed(tool_round, args.reps)),
        ("for scale: two plain exchanges (2 requests)", timed(plain, args.reps)),
    ]
    print("## The tool loop\n")
    print("| tool loop (MemoryTransport, median of %d) | time |" % args.reps)
    print("| --- | --- |")
    for name, value in rows:
        print("| %s | %.1f µs |" % (name, value * 1e6))
    return rows


if __name__ == "__main__":
    main()
