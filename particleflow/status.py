"""Long phases announce themselves: ``with phase("choosing sigma ..."):`` tells whoever
listens (the command line installs a listener that prints the phase, then a line every
10 s while it lasts).  Nothing is printed when nobody listens (the Python API)."""
import contextlib

_listener = [None]


def listen(fn):
    """Install ``fn(event, text)`` (event "begin" or "end") as the listener; returns the
    previous one (None: nobody listens)."""
    previous, _listener[0] = _listener[0], fn
    return previous


@contextlib.contextmanager
def phase(text):
    fn = _listener[0]
    if fn is not None:
        fn("begin", text)
    try:
        yield
    finally:
        if fn is not None:
            fn("end", text)
