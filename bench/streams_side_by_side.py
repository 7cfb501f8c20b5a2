"""Two servers of the streams bench under the same load at the same time (issue 18).

bench/bench_streams.py takes its points one after another, so on a shared machine each
point meets other jobs' load of its own moment, and a change of a few percent drowns in
it. Here two targets run at once, each with its own mock upstream and load generator and
the same number of streams, so whatever else runs on the machine hits both alike; each
repetition swaps the order they start in. The figure is server CPU per relayed event over
the same window, as in the streams bench; read it only where neither falls behind (the
streams bench's lateness), e.g. at 100 streams each on two cores.

Run: python -m bench.streams_side_by_side "metered" "metered before" [streams] [seconds]
[repetitions] (target names as in bench/bench_streams.py; "... before" needs
BENCH_STREAMS_BEFORE=<a checkout of the earlier version>).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import bench_streams as streams


def side_by_side(names: list[str], connections: int, seconds: float, reps: int) -> list[str]:
    streams.allow_many_sockets()
    figures: dict[str, list[float]] = {name: [] for name in names}
    lines = [
        f"side by side, {connections} streams each, {seconds:g} s a window:"
        " server CPU per relayed event"
    ]
    for rep in range(reps):
        order = names if rep % 2 == 0 else names[::-1]
        with contextlib.ExitStack() as stack:
            servers = []
            for name in order:
                upstream, mock_pid = stack.enter_context(streams.mock_upstream())
                url, pid = stack.enter_context(streams.target(name, upstream, mock_pid))
                servers.append((name, url, pid))
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            start = time.monotonic() + 0.5
            loaders = [
                stack.enter_context(
                    streams.loading(url, connections, start, seconds, f"{tmp}/{index}")
                )
                for index, (_, url, _) in enumerate(servers)
            ]
            time.sleep(max(0.0, start + streams.WARMUP - time.monotonic()))
            before = [streams.cpu_seconds(pid) for _, _, pid in servers]
            time.sleep(max(0.0, start + streams.WARMUP + seconds - time.monotonic()))
            cpu = [
                streams.cpu_seconds(pid) - was
                for (_, _, pid), was in zip(servers, before, strict=True)
            ]
            for procs in loaders:
                for proc in procs:
                    proc.wait(timeout=60)
            for index, (name, _, _) in enumerate(servers):
                events = sum(
                    json.loads(Path(f"{tmp}/{index}.{part}.json").read_text())["events"]
                    for part in range(len(loaders[index]))
                )
                figures[name].append(cpu[index] / events * 1e6 if events else float("nan"))
        lines.append(
            f"  round {rep + 1}: "
            + ", ".join(f"{name} {figures[name][-1]:.1f} us" for name in names)
        )
    medians = {name: statistics.median(values) for name, values in figures.items()}
    first = medians[names[0]]
    lines.append(
        "  medians: "
        + ", ".join(
            f"{name} {value:.1f} us ({value / first:.2f}x)" for name, value in medians.items()
        )
    )
    return lines


def main(argv: list[str]) -> None:
    names = argv[:2]
    connections = int(argv[2]) if len(argv) > 2 else 100
    seconds = float(argv[3]) if len(argv) > 3 else 6.0
    reps = int(argv[4]) if len(argv) > 4 else 3
    for line in side_by_side(names, connections, seconds, reps):
        print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
