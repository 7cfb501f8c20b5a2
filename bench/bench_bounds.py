"""What the connection bounds cost and what they stop (issue 11): throughput at 32
connections, RSS under unfinished huge heads, slowloris and silent connections; each
beside the unbounded server (bench/unbounded_server.py) in the same run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.harness import (
    PYTHON,
    free_port,
    median,
    mock_upstream,
    process,
    proxy_env,
    proxy_server,
    row,
    rss_kib,
    wrk,
)

HEAD_START = b"GET /v1/models HTTP/1.1\r\nHost: proxy.test\r\n"


@contextlib.contextmanager
def unbounded_server(upstream: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [PYTHON, "-m", "bench.unbounded_server", str(port)]
    with process(args, proxy_env(upstream), f"{url}/health") as proc:
        yield url, proc.pid


Server = Callable[[str], contextlib.AbstractContextManager[tuple[str, int]]]
SERVERS: list[tuple[str, Server]] = [("unbounded", unbounded_server), ("bounded", proxy_server)]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _open_count(socks: list[socket.socket]) -> int:
    still_open = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
    return still_open


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: a per-request cost that, unlike requests/s,
    other load on the machine barely moves."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(rounds: int = 5, seconds: float = 4) -> list[str]:
    rps: dict[str, list[float]] = {name: [] for name, _ in SERVERS}
    cpu_us: dict[str, list[float]] = {name: [] for name, _ in SERVERS}
    with mock_upstream() as upstream, contextlib.ExitStack() as stack:
        started = {name: stack.enter_context(start(upstream)) for name, start in SERVERS}
        for url, _ in started.values():
            wrk(f"{url}/v1/chat/completions", 32, 1)  # warm the pools
        for _ in range(rounds):  # alternate, so drift in machine load hits both sides
            for name, (url, pid) in started.items():
                cpu = _cpu_seconds(pid)
                result = wrk(f"{url}/v1/chat/completions", 32, seconds)
                rps[name].append(result["rps"])
                cpu_us[name].append(1e6 * (_cpu_seconds(pid) - cpu) / (result["rps"] * seconds))
    before, after = median(rps["unbounded"]), median(rps["bounded"])
    cpu_before, cpu_after = median(cpu_us["unbounded"]), median(cpu_us["bounded"])
    return [
        row(
            "throughput, 32 conns: unbounded / bounded",
            f"{before:,.0f} / {after:,.0f} req/s",
        ),
        row(
            "proxy CPU per request: unbounded / bounded",
            f"{cpu_before:.0f} / {cpu_after:.0f} us",
        ),
        row(
            "cost of the bounds (CPU per request)",
            f"{100 * (cpu_after - cpu_before) / cpu_before:+.1f} %",
            "< 5 %",
            cpu_after - cpu_before < 0.05 * cpu_before,
        ),
    ]


def slow_heads(mb: int = 30, connections: int = 3) -> list[str]:
    lines = []
    piece = b"a" * 65536
    for name, start in SERVERS:
        with mock_upstream() as upstream, start(upstream) as (url, pid):
            before = rss_kib(pid)["VmRSS"] / 1024
            socks = [
                socket.create_connection(("127.0.0.1", _port(url))) for _ in range(connections)
            ]
            for sock in socks:
                sock.sendall(HEAD_START + b"X-Filler: ")
                with contextlib.suppress(OSError):
                    for _ in range(mb * 16):
                        sock.sendall(piece)
            time.sleep(0.5)
            peak = rss_kib(pid)["VmHWM"] / 1024
            for sock in socks:
                sock.close()
        lines.append(
            row(
                f"{connections} unfinished {mb} MB heads, {name}: RSS before / peak",
                f"{before:.0f} / {peak:.0f} MB",
            )
        )
    return lines


def lingering(count: int = 150, wait: float = 12.0) -> list[str]:
    lines = []
    for name, start in SERVERS:
        with mock_upstream() as upstream, start(upstream) as (url, _):
            slow = [socket.create_connection(("127.0.0.1", _port(url))) for _ in range(count)]
            silent = [socket.create_connection(("127.0.0.1", _port(url))) for _ in range(count)]
            for sock in slow:
                sock.sendall(HEAD_START)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:  # slowloris: a header line a second
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X-a: b\r\n")
                time.sleep(1)
            slow_open, silent_open = _open_count(slow), _open_count(silent)
            for sock in slow + silent:
                sock.close()
        lines.append(
            row(
                f"after {wait:g} s, {name}: slowloris / silent conns open",
                f"{slow_open} / {silent_open} of {count}",
            )
        )
    return lines


def protocol_overhead(rounds: int = 15, requests: int = 20000) -> list[str]:
    """The server protocol alone, in-process: a whole small request per read, answered by
    an app that replies at once. Isolates the bounds' cost from the machine's noise."""
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from core.server.httptools_protocol import BoundedHttpToolsProtocol

    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer x\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )

    class Transport(asyncio.Transport):
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"sockname": ("127.0.0.1", 80), "peername": ("127.0.0.1", 5000)}.get(name)

        def write(self, data: Any) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def per_request_us(cls: type[asyncio.Protocol]) -> float:
        config = uvicorn.Config(app, lifespan="off", log_level="warning")
        config.load()
        protocol: Any = cls(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
        protocol.connection_made(Transport())
        started = time.perf_counter()
        for _ in range(requests):
            protocol.data_received(request)
            await asyncio.sleep(0)  # the request's task runs
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - started
        protocol.connection_lost(None)  # cancels its timers
        return 1e6 * elapsed / requests

    async def measure() -> dict[str, list[float]]:
        classes = {"unbounded": HttpToolsProtocol, "bounded": BoundedHttpToolsProtocol}
        results: dict[str, list[float]] = {name: [] for name in classes}
        for _ in range(rounds):
            for name, cls in classes.items():
                results[name].append(await per_request_us(cls))
        return results

    try:
        import uvloop

        results = uvloop.run(measure())
    except ImportError:
        results = asyncio.run(measure())
    return [
        row(
            "server protocol per request, min: unbounded / bounded",
            f"{min(results['unbounded']):.1f} / {min(results['bounded']):.1f} us",
        )
    ]


def run() -> list[str]:
    lines = ["connection bounds (issue 11)"]
    for section in (throughput, protocol_overhead, slow_heads, lingering):
        lines.extend(section())
    return lines
