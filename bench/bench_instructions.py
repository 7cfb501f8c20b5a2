"""The proxy's own work in instructions (issue 18): figures that hold on a busy machine.

The streams bench (bench/bench_streams.py) times the whole server on a shared two-core
machine, where the same build measures 1.14x one run and 1.20x the next: a change of a
few percent cannot be told from the neighbours' load. Here the in-process exchange of
bench/bench_exchange.py (the app `llm-proxy serve` builds, the upstream answering from
memory) runs under valgrind's callgrind, which counts the instructions executed: the
same code, inputs and environment give the same count whatever else the machine does.

Each configuration runs 0 and 200 requests (the difference is 200 requests' work, start-up
and warm-up taken out), with streams of 40 and of 240 events: the difference between the two lengths
is the cost of an event, the rest the cost of a request. `BENCH_INSTRUCTIONS_BEFORE=<a
checkout of an earlier version>` counts that checkout too, with the same interpreter and
packages, so the ratio is the change's own. Needs valgrind (`make bench-tools`); about
four minutes, eight with a checkout before.

Instructions are not seconds (a cache miss costs more than an add), but for the same
interpreter running much the same code they move together; the streams bench keeps the
wall-clock figures.
"""

from __future__ import annotations

import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.harness import ROOT, callgrind_instructions, row

REQUESTS = 200
SHORT, LONG = 37, 237  # words: streams of 40 and 240 events (bench/bench_exchange.py)
CONFIGURATIONS = ("proxy", "metered")
BEFORE = os.environ.get("BENCH_INSTRUCTIONS_BEFORE", "")

# Run in the checkout measured (its own bench/bench_exchange.py builds its own app).
_DRIVE = """
import asyncio, gc, sys
from bench import bench_exchange as exchange
name, count, words = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
exchange.WORDS = words
app = exchange.build(*exchange.CONFIGURATIONS[name])
async def go():
    await exchange.requests(app, 30)  # warm: imports, pools, caches
    # What start-up built is out of the collector's sight, as a server does it
    # (core/server/runner.py tune_gc): a full pass over it that happened to fall inside
    # the measured requests in one checkout and not the other moved a count by a fifth.
    gc.collect()
    gc.freeze()
    await exchange.requests(app, count)
asyncio.run(go())
"""


def instructions(root: Path, name: str, count: int, words: int) -> int:
    command = [sys.executable, "-c", _DRIVE, name, str(count), str(words)]
    return callgrind_instructions(command, root, {**os.environ, "PYTHONPATH": str(root)})


def measure(root: Path) -> dict[str, tuple[float, float]]:
    """Per configuration: (instructions a request of 40 events, instructions an event)."""
    jobs = {
        (name, count, words): (root, name, count, words)
        for name in CONFIGURATIONS
        for count in (0, REQUESTS)
        for words in (SHORT, LONG)
    }
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores: two valgrinds at once
        futures = {key: pool.submit(instructions, *job) for key, job in jobs.items()}
        counts = {key: future.result() for key, future in futures.items()}
    figures = {}
    for name in CONFIGURATIONS:
        # Each length has its own start: the warm-up runs streams of that length.
        short = (counts[(name, REQUESTS, SHORT)] - counts[(name, 0, SHORT)]) / REQUESTS
        long = (counts[(name, REQUESTS, LONG)] - counts[(name, 0, LONG)]) / REQUESTS
        figures[name] = (short, (long - short) / (LONG - SHORT))
    return figures


def run() -> list[str]:
    if shutil.which("valgrind") is None:
        return ["instructions skipped: valgrind is not installed (`make bench-tools`)"]
    now = measure(ROOT)
    before = measure(Path(BEFORE).resolve()) if BEFORE else None
    lines = [
        f"instructions under callgrind, one streamed exchange in-process ({REQUESTS} requests;"
        " repeatable on a busy machine)"
    ]
    for name, (request, event) in now.items():
        fixed = request - 40 * event
        figure = f"{request:,.0f} ({event:,.0f} an event, {fixed:,.0f} a request)"
        if before is not None:
            earlier = before[name][0]
            figure += f", {request / earlier:.3f}x of {earlier:,.0f} before"
        lines.append(row(f"instructions a 40-event request, {name}", figure))
    proxy, metered = now["proxy"], now["metered"]
    lines.append(
        row(
            "metering's cost a 40-event request, and an event",
            f"+{metered[0] - proxy[0]:,.0f}, +{metered[1] - proxy[1]:,.0f}",
        )
    )
    return lines
