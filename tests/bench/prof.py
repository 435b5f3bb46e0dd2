"""Profiles of openai2 on the benchmark's cases (cProfile), and its import cost (-X importtime).

    .venv-bench/bin/python tests/bench/prof.py [--top N] [case ...]

cases: seq, stream, text, chat, astream, import, firstreq, cli (default: all).  Starts its own
tests/bench/server.py; prints to stdout and writes tests/bench/results-profile.txt (git-ignored).
Any Python works (standard library only); openai2 is imported from this repository.  In
``astream`` the worker thread is profiled too: ``openai2.chat.start_producer`` is wrapped here,
in this script only, so that the thread's function runs under its own profiler.
"""
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from run import BenchServer  # noqa: E402

KEY = "sk-bench-0000000000000000"
MESSAGES = [{"role": "user", "content": "Say hello."}]
SEQ_REQUESTS = 3000
CHUNKS = 20000


def stats_text(profiler, top, title, elapsed=None):
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs()
    head = "=== %s" % title + (" (%.3f s under the profiler)" % elapsed if elapsed is not None else "")
    out.write(head + "\n--- by own time\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write("--- by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def profile_call(func, top, title):
    func()  # warm-up: lazy imports, connection
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    func()
    profiler.disable()
    return stats_text(profiler, top, title, time.perf_counter() - start)


def case_seq(root, top):
    from openai2 import OpenAI

    create = OpenAI(api_key=KEY, base_url=root + "/v1").chat.completions.create

    def run():
        for _ in range(SEQ_REQUESTS):
            if not create(model="bench-model", messages=MESSAGES).choices[0].message.content:
                raise SystemExit("empty answer")

    return profile_call(run, top, "seq: %d non-streaming create() calls" % SEQ_REQUESTS)


def case_stream(root, top, variant):
    from openai2 import Chat, OpenAI

    client = OpenAI(api_key=KEY, base_url=root + "/n%d/v1" % CHUNKS)

    def run():
        if variant == "chat":
            return "".join(Chat(client=client, model="bench-model").stream_request("Say hello."))
        stream = client.chat.completions.create(model="bench-model", messages=MESSAGES, stream=True)
        if variant == "text":
            return "".join(stream.iter_text())
        parts = []
        for chunk in stream:
            if chunk.choices:
                piece = chunk.choices[0].delta.content
                if piece:
                    parts.append(piece)
        return "".join(parts)

    names = {"chunks": "create(stream=True) chunk objects", "text": ".iter_text()", "chat": "Chat.stream_request"}
    return profile_call(run, top, "stream %s: %d chunks" % (names[variant], CHUNKS))


def case_astream(root, top):
    import asyncio

    import openai2.chat as chat_module
    from openai2 import Chat, OpenAI

    worker_profiles = []
    original = chat_module.start_producer

    def profiled_start(func):
        def wrapped():
            profiler = cProfile.Profile()
            profiler.enable()
            try:
                func()
            finally:
                profiler.disable()
                worker_profiles.append(profiler)

        original(wrapped)

    client = OpenAI(api_key=KEY, base_url=root + "/n%d/v1" % CHUNKS)

    async def consume():
        parts = []
        async for piece in Chat(client=client, model="bench-model").async_stream_request("Say hello."):
            parts.append(piece)
        return "".join(parts)

    asyncio.run(consume())  # warm-up, unprofiled
    chat_module.start_producer = profiled_start
    try:
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        asyncio.run(consume())
        profiler.disable()
        elapsed = time.perf_counter() - start
    finally:
        chat_module.start_producer = original
    for _ in range(100):
        if worker_profiles:
            break
        time.sleep(0.01)
    text = stats_text(profiler, top, "astream: event-loop thread, %d chunks" % CHUNKS, elapsed)
    if worker_profiles:
        text += stats_text(worker_profiles[-1], top, "astream: worker thread")
    return text


def importtime(argv, top, title):
    """Run ``python -X importtime ARGV``; list the modules with the largest self and cumulative times."""
    done = subprocess.run([sys.executable, "-X", "importtime"] + argv, cwd=ROOT, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) == 3:
            rows.append((int(fields[0]), int(fields[1]), fields[2].rstrip()))
    total = sum(r[0] for r in rows)
    own = [r for r in rows if r[2].strip().startswith("openai2")]
    out = ["=== %s: %d modules, %.1f ms of imports in all (sum of self times)" % (title, len(rows), total / 1000.0)]
    out.append("--- openai2's own modules (self / cumulative, ms)")
    for self_us, cum_us, name in sorted(own, key=lambda r: -r[1]):
        out.append("%8.2f %8.2f  %s" % (self_us / 1000.0, cum_us / 1000.0, name))
    out.append("--- largest self times (ms)")
    for self_us, cum_us, name in sorted(rows, key=lambda r: -r[0])[:top]:
        out.append("%8.2f %8.2f  %s" % (self_us / 1000.0, cum_us / 1000.0, name))
    out.append("--- every module imported (in order)")
    out.append(", ".join(r[2].strip() for r in rows))
    if done.returncode != 0:
        out.append("(exit status %d: %s)" % (done.returncode, done.stderr.strip().splitlines()[-1:]))
    return "\n".join(out) + "\n"


def main(argv):
    top = 25
    if "--top" in argv:
        i = argv.index("--top")
        top = int(argv[i + 1])
        del argv[i : i + 2]
    cases = argv or ["import", "firstreq", "cli", "seq", "stream", "text", "chat", "astream"]
    server = BenchServer()
    root = server.root
    first_request = (
        "from openai2 import OpenAI; OpenAI(api_key=%r, base_url=%r).chat.completions.create("
        "model='m', messages=[{'role': 'user', 'content': 'hi'}])" % (KEY, root + "/v1")
    )
    sections = []
    try:
        for case in cases:
            if case == "import":
                sections.append(importtime(["-c", "import openai2"], top, "python -X importtime -c 'import openai2'"))
            elif case == "firstreq":
                sections.append(importtime(["-c", first_request], top, "import openai2 + one request"))
            elif case == "cli":
                sections.append(importtime(["-m", "openai2", "--help"], top, "python -m openai2 --help"))
            elif case == "seq":
                sections.append(case_seq(root, top))
            elif case in ("stream", "text", "chat"):
                sections.append(case_stream(root, top, {"stream": "chunks"}.get(case, case)))
            elif case == "astream":
                sections.append(case_astream(root, top))
            else:
                raise SystemExit("unknown case %r" % case)
            sys.stdout.write(sections[-1] + "\n")
            sys.stdout.flush()
    finally:
        server.stop()
    with open(os.path.join(HERE, "results-profile.txt"), "w") as f:
        f.write("\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
