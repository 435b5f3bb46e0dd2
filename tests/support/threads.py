"""Where another thread is: a handshake for tests that must act while a thread is blocked at a
given place (in a socket read, say), instead of a guessed sleep.

``wait_until_in(ident, names)`` looks at the thread's Python stack (``sys._current_frames``,
CPython and PyPy alike) every few milliseconds until every one of ``names`` (function names)
is on it::

    main = threading.main_thread().ident
    # in a server thread: answer the rest only once the client reads the headers
    assert wait_until_in(main, ("parse_headers", "readinto"))
"""
import sys
import threading
import time


def stack_names(ident):
    """The function names on thread ``ident``'s stack now (empty if it is not running)."""
    frame, names = sys._current_frames().get(ident), set()
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return names


def wait_until_in(ident, names, timeout=10.0):
    """Wait until all of ``names`` are on thread ``ident``'s stack.

    :returns: True once they are, False after ``timeout`` seconds
    """
    wanted = set(names)
    pause = threading.Event()  # never set: its wait is the pause between two looks
    deadline = time.monotonic() + timeout
    while not wanted <= stack_names(ident):
        if time.monotonic() > deadline:
            return False
        pause.wait(0.002)
    return True
