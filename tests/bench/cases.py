"""One benchmark case in a fresh process:  python tests/bench/cases.py IMPL CASE BASE_URL REPS

IMPL is ``o2`` (openai2 from this repository), ``sdk`` (the official ``openai`` package, only in
.venv-bench) or ``base`` (the bare standard-library loop of baseline.py); ``raw`` (seq only) is a raw-socket
client that parses nothing, to show the server's own capacity.  BASE_URL is the bench
server's root (``http://127.0.0.1:PORT``).  The case warms up once, then measures REPS times and
prints one line ``RESULT {json}`` with the list of values (run.py takes the median).

Nothing is imported at module level except ``os``, ``sys`` and ``time`` (all already loaded by
the interpreter), so the ``import`` case measures the client's imports alone.
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)  # openai2 from the repository, never an installed copy

KEY = "sk-bench-0000000000000000"
MODEL = "bench-model"
MESSAGES = [{"role": "user", "content": "Say hello."}]
STREAM_CHUNKS = 20000
SEQ_SECONDS = 1.0
CONCURRENT = 100
EXPECTED_TEXT = "".join(" tok%d" % (i % 10) for i in range(STREAM_CHUNKS))


def _emit(**result):
    import json

    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def _hostport(root):
    from urllib.parse import urlsplit

    parts = urlsplit(root)
    return parts.hostname, parts.port


def _check(text):
    if text != EXPECTED_TEXT:
        raise SystemExit("stream text mismatch: got %d characters, expected %d" % (len(text), len(EXPECTED_TEXT)))


# -- 1. import + one request (fresh process per repetition; REPS is ignored) -------------------
def case_import(impl, root):
    url = root + "/v1"
    cpu_start = time.process_time()
    start = time.perf_counter()
    if impl == "o2":
        from openai2 import OpenAI
    elif impl == "sdk":
        from openai import OpenAI
    else:
        import http.client  # noqa: F401
        import json  # noqa: F401
    imported = time.perf_counter()
    cpu_imported = time.process_time()
    if impl == "base":
        from baseline import one_request

        host, port = _hostport(root)
        text = one_request(host, port, "/v1/chat/completions")
    else:
        client = OpenAI(api_key=KEY, base_url=url)
        text = client.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content
    done = time.perf_counter()
    if not text:
        raise SystemExit("empty answer")
    import resource

    # ru_maxrss of an exec'd child starts at its parent's RSS on Linux (the high-water mark is
    # carried across fork/vfork + exec), so a big driver would set the floor; VmHWM is the peak of
    # this process's own address space.  Both are recorded; the table uses VmHWM where it exists.
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_kib = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm_kib = int(line.split()[1])
    except OSError:
        pass
    _emit(
        import_ms=(imported - start) * 1000,
        import_cpu_ms=(cpu_imported - cpu_start) * 1000,
        total_ms=(done - start) * 1000,
        rss_mib=(hwm_kib if hwm_kib is not None else maxrss_kib) / 1024.0,
        maxrss_mib=maxrss_kib / 1024.0,
    )


# -- 2. sequential non-streaming requests on one connection -------------------------------------
def case_seq(impl, root, reps):
    url = root + "/v1"
    if impl in ("base", "raw"):
        from baseline import sequential, server_capacity

        host, port = _hostport(root)
        loop = sequential if impl == "base" else server_capacity

        def run(seconds):
            return loop(host, port, "/v1/chat/completions", seconds)

    else:
        if impl == "o2":
            from openai2 import OpenAI
        else:
            from openai import OpenAI
        client = OpenAI(api_key=KEY, base_url=url)
        create = client.chat.completions.create

        def run(seconds):
            count = 0
            start = time.perf_counter()
            deadline = start + seconds
            while True:
                if not create(model=MODEL, messages=MESSAGES).choices[0].message.content:
                    raise SystemExit("empty answer")
                count += 1
                now = time.perf_counter()
                if now >= deadline:
                    break
            return count, now - start

    run(0.3)
    values = []
    for _ in range(reps):
        count, elapsed = run(SEQ_SECONDS)
        values.append(count / elapsed)
    _emit(values=values)


# -- 3a. one stream of 20,000 chunks, sync -------------------------------------------------------
def case_stream(impl, root, reps, variant):
    url = root + "/n%d/v1" % STREAM_CHUNKS
    if impl == "base":
        from baseline import connect, stream_sync

        host, port = _hostport(root)
        conn = connect(host, port)

        def run():
            return stream_sync(conn, "/n%d/v1/chat/completions" % STREAM_CHUNKS)

    elif impl == "o2" and variant == "chat":
        from openai2 import Chat, OpenAI

        client = OpenAI(api_key=KEY, base_url=url)

        def run():
            chat = Chat(client=client, model=MODEL)
            return "".join(chat.stream_request("Say hello."))

    else:
        if impl == "o2":
            from openai2 import OpenAI
        else:
            from openai import OpenAI
        client = OpenAI(api_key=KEY, base_url=url)
        create = client.chat.completions.create

        def run():
            stream = create(model=MODEL, messages=MESSAGES, stream=True)
            parts = []
            if variant == "text":
                parts.extend(stream.iter_text())
            elif variant == "dicts":
                for chunk in stream.iter_dicts():
                    choices = chunk["choices"]
                    if choices:
                        piece = choices[0]["delta"].get("content")
                        if piece:
                            parts.append(piece)
            else:  # the SDK-shaped loop: attribute access on each chunk object
                for chunk in stream:
                    if chunk.choices:
                        piece = chunk.choices[0].delta.content
                        if piece:
                            parts.append(piece)
            return "".join(parts)

    _check(run())
    values = []
    for _ in range(reps):
        start = time.perf_counter()
        text = run()
        elapsed = time.perf_counter() - start
        _check(text)
        values.append(STREAM_CHUNKS / elapsed)
    _emit(values=values)


# -- 3b. one stream of 20,000 chunks, async ------------------------------------------------------
def case_astream(impl, root, reps):
    import asyncio

    url = root + "/n%d/v1" % STREAM_CHUNKS
    host, port = _hostport(root)

    async def main():
        if impl == "base":
            from baseline import async_stream

            async def run():
                return await async_stream(host, port, "/n%d/v1/chat/completions" % STREAM_CHUNKS)

        elif impl == "o2":
            from openai2 import Chat, OpenAI

            client = OpenAI(api_key=KEY, base_url=url)

            async def run():
                chat = Chat(client=client, model=MODEL)
                parts = []
                async for piece in chat.async_stream_request("Say hello."):
                    parts.append(piece)
                return "".join(parts)

        else:
            from openai import AsyncOpenAI

            client = AsyncOpenAI(api_key=KEY, base_url=url)

            async def run():
                stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
                parts = []
                async for chunk in stream:
                    if chunk.choices:
                        piece = chunk.choices[0].delta.content
                        if piece:
                            parts.append(piece)
                return "".join(parts)

        _check(await run())
        values = []
        for _ in range(reps):
            start = time.perf_counter()
            text = await run()
            elapsed = time.perf_counter() - start
            _check(text)
            values.append(STREAM_CHUNKS / elapsed)
        return values

    _emit(values=asyncio.run(main()))


# -- 4. 100 concurrent async requests against the 300 ms server ---------------------------------
def case_concurrent(impl, root, reps):
    import asyncio

    url = root + "/slow/v1"
    host, port = _hostport(root)

    async def main():
        if impl == "base":
            from baseline import async_concurrent, async_request

            connections = []
            single = [None]

            async def many():
                return await async_concurrent(host, port, "/slow/v1/chat/completions", CONCURRENT, connections)

            async def one():
                text, single[0] = await async_request(host, port, "/slow/v1/chat/completions", single[0])
                return text

        elif impl == "o2":
            from openai2 import Chat

            chats = [Chat(KEY, base_url=url, model=MODEL) for _ in range(CONCURRENT)]

            async def many():
                for chat in chats:
                    chat.clear()
                return await asyncio.gather(*(chat.async_request("Say hello.") for chat in chats))

            async def one():
                chats[0].clear()
                return await chats[0].async_request("Say hello.")

        else:
            from openai import AsyncOpenAI

            client = AsyncOpenAI(api_key=KEY, base_url=url)

            async def ask():
                answer = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
                return answer.choices[0].message.content

            async def many():
                return await asyncio.gather(*(ask() for _ in range(CONCURRENT)))

            one = ask

        await many()  # warm-up: connections opened, lazy imports done
        walls = []
        for _ in range(reps):
            start = time.perf_counter()
            answers = await many()
            walls.append(time.perf_counter() - start)
            if len(answers) != CONCURRENT or not all(answers):
                raise SystemExit("missing answers")
        latencies = []
        for _ in range(reps):
            start = time.perf_counter()
            if not await one():
                raise SystemExit("empty answer")
            latencies.append(time.perf_counter() - start)
        return walls, latencies

    walls, latencies = asyncio.run(main())
    _emit(values=walls, latency=latencies)


def main(argv):
    impl, case, root, reps = argv[0], argv[1], argv[2], int(argv[3])
    if impl not in ("o2", "sdk", "base", "raw"):
        raise SystemExit("IMPL must be o2, sdk, base or raw (seq only: the server's capacity)")
    if case == "import":
        case_import(impl, root)
    elif case == "seq":
        case_seq(impl, root, reps)
    elif case.startswith("stream"):
        case_stream(impl, root, reps, case.partition(":")[2] or "chunks")
    elif case == "astream":
        case_astream(impl, root, reps)
    elif case == "concurrent":
        case_concurrent(impl, root, reps)
    else:
        raise SystemExit("unknown case %r" % case)


if __name__ == "__main__":
    main(sys.argv[1:])
