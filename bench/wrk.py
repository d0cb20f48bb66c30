"""Loading a server with wrk: an independent generator, written in C, that costs a small fraction of the server's
CPU per request, so a ratio measured with it is the server's and not the generator's.

The httpx generator in bench/loadgen.py costs 0.8-1.3 ms of CPU per request, several times what a bare Starlette
route costs to serve one: a "reelhook / bare route" ratio measured with it is the generator's limit (issue 13).
wrk costs 0.03-0.11 ms. It cannot build a request per job itself, so Python writes the requests beforehand, one
`path<TAB>body` line each (a real hook token in the path, the provider's callback in the body: JSON has no raw tab
or newline), and a Lua script (`request()`, SCRIPTING in Debian's wrk package) formats them once in `init()` and
hands them out in order. In "once" mode every line is sent exactly once; a connection that asks for more gets a
GET that the hook route answers 405 (the tail, not counted as a callback): only those already between wrk's
`delay()` and `request()` as the last lines went out (fewer than the connections), since from then on `delay()`
holds every connection back 10 s, so they do not load the server while the last callbacks are answered. At the
last callback's answer the script stops the thread and leaves a file that tells us to end wrk's sleep (it sleeps
out `-d` whatever its threads do). The measured window is the script's own, first request sent to last answer,
on the monotonic clock (LuaJIT's ffi); wrk's first call of `request()`, made to check that a request parses,
sends nothing and is not counted. In "cycle" mode the lines go round for the whole duration (the bare route
stores nothing, so a repeat costs it nothing different).

One wrk thread drives every connection (epoll; it is far from its limit at these rates), so the generator takes
at most one of the two cores. Its CPU time is measured from outside (rusage of the reaped child), as the server's
is (/proc), and reported beside it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

SCRIPT = r"""
local ffi = require("ffi")  -- wrk's Lua is LuaJIT: a monotonic clock in microseconds
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local lines, i, done_file, finished, verified = {}, 0, nil, false, false
local threads = {}
-- globals, so that done() (in an environment of its own) can read them through thread:get()
mode, first_us, last_us, answered, failed, tail = "once", 0, 0, 0, 0, 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  mode, done_file = args[2], args[3]
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    local tab = line:find("\t", 1, true)
    lines[#lines + 1] = wrk.format("POST", line:sub(1, tab - 1), headers, line:sub(tab + 1))
  end
  -- after the last line: a GET to the POST-only hook route, answered 405 (and so told apart from a callback)
  after_last = wrk.format("GET", "/hooks/ttapi/after-the-last-line", {}, nil)
  if mode ~= "once" then  -- round and round for -d: wrk's own count and duration, no per-response Lua
    delay, response = nil, nil
  end
end

function delay()
  -- every line is out: this connection waits (10 s) rather than load the server while the last are answered
  if mode == "once" and i >= #lines then return 10000 end
  return 0
end

function request()
  if not verified then  -- wrk calls request() once before it connects, to check the request parses: not sent
    verified = true
    return lines[1]
  end
  if first_us == 0 then first_us = now_us() end
  i = i + 1
  if i > #lines then
    if mode == "once" then
      tail = tail + 1
      return after_last
    end
    i = 1
  end
  return lines[i]
end

function response(status, headers, body)
  if status == 405 then return end  -- a tail request, not a callback
  answered = answered + 1
  last_us = now_us()
  if status >= 400 then failed = failed + 1 end
  if mode == "once" and answered >= #lines and not finished then
    finished = true
    wrk.thread:stop()
    local f = io.open(done_file, "w")  -- wrk's main thread sleeps out -d: bench/wrk.py interrupts it
    f:close()
  end
end

function done(summary, latency, requests)
  local t = threads[1]
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"first_us": %.0f, "last_us": %.0f, "answered": %d, "tail": %d, "requests": %d, "duration_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    t:get("first_us"), t:get("last_us"), t:get("answered"), t:get("tail"), summary.requests, summary.duration,
    e.connect, e.read, e.write, t:get("mode") == "once" and t:get("failed") or e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

Mode = Literal["once", "cycle"]


def available() -> str | None:
    """wrk's path, or None when it is not installed (`make bench` installs it with apt-get where it can)."""
    return shutil.which("wrk")


def write_lines(path: Path, requests: list[tuple[str, str]]) -> Path:
    """The request file the Lua script reads: one `path<TAB>body` line per request."""
    for request_path, body in requests:
        if "\t" in request_path or "\t" in body or "\n" in body:
            raise ValueError(f"a request for wrk must have no tab or newline: {request_path}")
    path.write_text("".join(f"{request_path}\t{body}\n" for request_path, body in requests))
    return path


def load(url: str, requests: Path, *, connections: int, seconds: int, mode: Mode, workdir: Path) -> dict[str, Any]:
    """Run wrk against `url` with the requests in `requests`; its report, with its own CPU time (`generator_cpu_s`).

    Returns requests (answered in the window, tail excluded), elapsed_s (the window), tail (GETs after the last
    line), errors (by kind: `status` counts answers of 400 and above, the tail's 405 excepted; the others are wrk's
    socket errors), p50_ms, p99_ms, max_ms (wrk's, tail included) and generator_cpu_s."""
    wrk = available()
    if wrk is None:
        raise RuntimeError("wrk is not installed: apt-get install wrk (make bench does, as root)")
    script, done_file = workdir / "requests.lua", workdir / "wrk.done"
    script.write_text(SCRIPT)
    done_file.unlink(missing_ok=True)
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), url]
    command += ["--", str(requests), mode, str(done_file)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()) as process:
        deadline = time.monotonic() + seconds + 60
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
            elif done_file.exists():
                process.send_signal(signal.SIGINT)  # wrk's SIGINT ends its sleep and reports; sent until it does
            time.sleep(0.05)
        stdout, stderr = process.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.strip() or stdout.strip()}")
    line = next((line for line in stdout.splitlines() if line.startswith("WRK-JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no report:\n{stdout}\n{stderr}")
    raw = json.loads(line.removeprefix("WRK-JSON "))
    return {
        "generator": "wrk",
        "connections": connections,
        # "once": first request sent to last callback answered, the script's window; "cycle": wrk's own
        "requests": raw["answered"] if mode == "once" else raw["requests"],
        "elapsed_s": (raw["last_us"] - raw["first_us"] if mode == "once" else raw["duration_us"]) / 1e6,
        "tail": raw["tail"],
        "errors": raw["errors"],
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "generator_cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
    }


def failed(report: dict[str, Any]) -> int:
    """Requests that got no 2xx/3xx answer: wrk's errors of every kind."""
    return int(sum(report["errors"].values()))


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "LANG": "C"}
