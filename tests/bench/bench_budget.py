"""The cost of keeping a long conversation within a token budget, per request.

    python3 tests/bench/bench_budget.py [--messages 2000] [--reps 200]

A history of N messages (user questions and assistant answers, English and Chinese) and one new
question: what the conversation layer spends choosing the messages to send — with no budget
(``MessageBuffer.payload``), with ``MsgMaxTokens`` when everything fits (the common case: a
running total of the history's tokens, kept over appends), and when messages must be left out.
The first estimate of each message is made once and remembered; the figures are the steady
state of later requests.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from openai2.history import MessageBuffer  # noqa: E402
from openai2.tokens import count_tokens  # noqa: E402


def timed(fn, reps):
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)
    buffer = MessageBuffer()
    for i in range(args.messages // 2):
        buffer.commit(
            [
                {"role": "user", "content": "question %d about the deploy error, 部署时的错误 %d" % (i, i)},
                {"role": "assistant", "content": "an answer of a few sentences about it. " * 3},
            ]
        )

    def cost(message):
        return count_tokens(message, model="gpt-4o")

    new = [{"role": "user", "content": "and one more question"}]
    total = buffer.fit(new, None, cost).tokens  # every message estimated once
    rows = [
        ("no budget: `payload` (the messages as they are)", timed(lambda: buffer.payload(new), args.reps)),
        ("`MsgMaxTokens`, everything fits", timed(lambda: buffer.fit(new, total * 2, cost, extra=3), args.reps)),
        ("`MsgMaxTokens`, half of the history left out", timed(lambda: buffer.fit(new, total // 2, cost, extra=3), args.reps)),
        ("for scale: estimating the whole history once", timed(lambda: count_tokens(buffer.view(), model="gpt-4o"), 5)),
    ]
    print("## Token budget: choosing what to send (%d messages)\n" % args.messages)
    print("| step | time per request |")
    print("| --- | --- |")
    for name, value in rows:
        print("| %s | %.3f ms |" % (name, value * 1e3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
