"""Closed-loop runs with ``wrk`` when it is installed.

wrk (C, epoll) drives several times more requests per second from one CPU
than the bundled Python generator, so it measures nginx's and the origin's
maximum throughput rather than the generator's.  A Lua ``done`` hook prints
wrk's own latency percentiles as one JSON line.  wrk cannot schedule requests
at a constant rate and measure from the schedule (that needs wrk2), so
open-loop runs always use the bundled generator.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

from .loadgen import DEFAULT_USER_AGENT, PERCENTILES

MARK = "WRKJSON "
LUA = """\
done = function(summary, latency, requests)
  local ps = {}
  for _, p in ipairs({%(percentiles)s}) do
    ps[#ps + 1] = string.format('"p%%s": %%.3f', p, latency:percentile(p) / 1000.0)
  end
  io.write(string.format(
    '%(mark)s{"requests": %%d, "duration_us": %%d, "bytes": %%d, ' ..
    '"errors": {"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}, ' ..
    '"latency_ms": {%%s, "mean": %%.3f, "max": %%.3f}}\\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    table.concat(ps, ", "), latency.mean / 1000.0, latency.max / 1000.0))
end
"""


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def write_script(directory: Path) -> Path:
    path = directory / "report.lua"
    path.write_text(LUA % {"percentiles": ", ".join(f"{p:g}" for p in PERCENTILES), "mark": MARK})
    return path


def command(binary: str, script: Path, url: str, *, concurrency: int, duration: float, headers: list[tuple[str, str]]) -> list[str]:
    argv = [binary, "-t1", f"-c{concurrency}", f"-d{max(1, math.ceil(duration))}s", "--timeout", "10s", "-s", str(script)]
    merged: dict[str, tuple[str, str]] = {}  # later headers override earlier ones
    for k, v in [("User-Agent", DEFAULT_USER_AGENT), ("Accept", "text/html,*/*;q=0.8"), ("Accept-Language", "en-GB,en;q=0.9"), *headers]:
        merged[k.lower()] = (k, v)
    for k, v in merged.values():
        argv += ["-H", f"{k}: {v}"]
    return [*argv, url]


def parse_output(stdout: str) -> dict:
    """The JSON our Lua hook printed, as a bundled-generator-shaped summary."""
    for line in stdout.splitlines():
        if line.startswith(MARK):
            raw = json.loads(line[len(MARK) :])
            break
    else:
        raise ValueError(f"wrk printed no report line:\n{stdout[-800:]}")
    elapsed = raw["duration_us"] / 1e6
    errors = raw["errors"]
    non_2xx = errors["status"]
    return {
        "mode": "closed",
        "requests": raw["requests"],
        "errors": errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        "error_samples": [f"wrk: {k}={v}" for k, v in errors.items() if v],
        # wrk only counts non-2xx/3xx statuses.
        "statuses": {"2xx/3xx": raw["requests"] - non_2xx, **({"other": non_2xx} if non_2xx else {})},
        "body_bytes": raw["bytes"],
        "elapsed": elapsed,
        "rps": raw["requests"] / elapsed if elapsed else 0.0,
        "latency_ms": raw["latency_ms"],
    }


def run(binary: str, script: Path, url: str, *, concurrency: int, duration: float, headers: list[tuple[str, str]], preexec=None) -> subprocess.Popen:
    return subprocess.Popen(
        command(binary, script, url, concurrency=concurrency, duration=duration, headers=headers),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=preexec,
    )
