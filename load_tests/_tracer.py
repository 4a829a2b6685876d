"""``python load_tests/_tracer.py ARGS…``: ``edgeproxy ARGS…`` with a bytecode
counter that SIGUSR1 switches on and SIGUSR2 switches off (writing
``[filename, function, bytecodes, calls]`` rows as JSON to
``$EDGEPROXY_TRACE_OUT``).  Used by ``load_tests.bytecodes``; never by the
proxy itself."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter


def main() -> None:
    out = os.environ["EDGEPROXY_TRACE_OUT"]
    ops: Counter = Counter()
    calls: Counter = Counter()

    def tracer(frame, event, arg):
        code = frame.f_code
        name = code.co_name
        if code.co_filename == "<string>":  # dataclass-generated methods: say whose
            owner = frame.f_locals.get("self")
            name = f"{name}@{type(owner).__name__}"
        key = (code.co_filename, name)
        if event == "opcode":
            ops[key] += 1
        elif event == "call":
            frame.f_trace_opcodes = True
            calls[key] += 1
        return tracer

    def on(*_):
        sys.settrace(tracer)
        frame = sys._getframe().f_back  # frames already running (the loop's) count from now on
        while frame is not None:
            frame.f_trace = tracer
            frame.f_trace_opcodes = True
            frame = frame.f_back

    def off(*_):
        sys.settrace(None)
        rows = [[f, n, v, calls.get((f, n), 0)] for (f, n), v in ops.items()]
        tmp = out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(rows, fh)
        os.replace(tmp, out)

    signal.signal(signal.SIGUSR1, on)
    signal.signal(signal.SIGUSR2, off)
    from edgeproxy.cli import main as edgeproxy_main

    sys.argv = ["edgeproxy", *sys.argv[1:]]
    edgeproxy_main()


if __name__ == "__main__":
    main()
