"""`python -m core.devtools.mock_upstream [--host H] [--port P] [--chunks N] [--delay-ms F]
[--gzip]`: the mock alone on plain uvicorn (`llm-proxy mock-upstream` is the same with the
proxy's server settings)."""

from __future__ import annotations

import argparse

from core.devtools.mock_upstream.knobs import MockOptions

DEFAULT_PORT = 8788  # as `llm-proxy mock-upstream`


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.devtools.mock_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--chunks", type=int, default=MockOptions.chunks)
    parser.add_argument("--delay-ms", type=float, default=MockOptions.delay_ms)
    parser.add_argument(
        "--gzip", action="store_true", help="gzip replies to callers that accept it"
    )
    args = parser.parse_args(argv)

    import uvicorn  # only when run

    from core.devtools.mock_upstream.app import MockUpstream

    options = MockOptions(chunks=args.chunks, delay_ms=args.delay_ms, gzip=args.gzip)
    print(f"mock upstream on http://{args.host}:{args.port}")
    uvicorn.run(
        MockUpstream(options), host=args.host, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
