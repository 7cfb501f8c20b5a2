"""`llm-proxy serve | mock-upstream | demo | check | tokens ... | usage`."""

from __future__ import annotations

import argparse
import os
import secrets
import sys

from core import __version__
from core.config import ConfigError, load_settings, mask_url_passwords

DEMO_PORT = 8787
MOCK_PORT = 8788


def cmd_serve(args: argparse.Namespace) -> int:
    from core.app import MisconfiguredApp, create_app
    from core.server.runner import serve
    from core.telemetry.serving import mark_server

    mark_server(args.workers)  # /metrics, shared by the workers
    app = create_app()
    if isinstance(app, MisconfiguredApp):
        # A server can refuse to start (a function cannot: it answers 500 instead, see
        # docs/refusals.md); say what is wrong, as `check` does.
        for problem in app.problems:
            print(f"llm-proxy: refusing to start: {mask_url_passwords(problem)}", file=sys.stderr)
        return 2
    if args.workers > 1:
        settings = load_settings()
        guard = settings.guard
        counted = guard.limits_on or settings.usage.budgets_on
        if counted and guard.limit_store.startswith("memory"):
            # Each process would keep its own count: N workers would let N times the limit
            # through, silently.
            print(
                "llm-proxy: refusing to start: --workers > 1 with rate limits or budgets needs "
                "a store the processes share (LIMIT_STORE or TOKEN_STORE = sqlite:///..., "
                "redis://... or dynamodb://...), not memory",
                file=sys.stderr,
            )
            return 2
        if settings.admin_token and (
            not settings.token_store or settings.token_store.startswith("memory")
        ):
            # The dashboard would throw the kill switch (and end a session) in the one
            # worker that served it; the others would go on serving.
            print(
                "llm-proxy: refusing to start: --workers > 1 with ADMIN_TOKEN needs a "
                "TOKEN_STORE the processes share (sqlite:///..., redis://... or "
                "dynamodb://...), not memory: the kill switch would reach one worker only",
                file=sys.stderr,
            )
            return 2
        # Each worker process builds its own app (and pool) from the environment.
        serve(
            "core.cli:app_from_environment",
            args.host,
            args.port,
            workers=args.workers,
            factory=True,
        )
    else:
        serve(app, args.host, args.port)
    return 0


def app_from_environment() -> object:
    from core.app import create_app
    from core.proxy.access_log import configure_logging
    from core.server.runner import tune_gc
    from core.telemetry.serving import mark_server

    configure_logging()  # each worker process is an entry point of its own
    mark_server()  # a worker of `serve --workers N` (the parent chose the metrics directory)
    app = create_app()
    tune_gc()
    return app


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from core.devtools.mock_upstream import MockOptions, MockUpstream
    from core.server.runner import serve

    print(
        f"mock upstream on http://{args.host}:{args.port} (OpenAI /v1, Anthropic /v1/messages, Gemini /v1beta)"
    )
    options = MockOptions(chunks=args.chunks, delay_ms=args.delay_ms, gzip=args.gzip)
    serve(MockUpstream(options), args.host, args.port)
    return 0


def demo_environment(port: int, mock_port: int, token: str, admin_token: str) -> dict[str, str]:
    """The demo always talks to the built-in mock (a real key in .env is never spent by a
    demo); a token or origins already set in the environment win. It shows what an owner
    gets beyond the relay: the dashboard (tokens kept in memory for the run), a budget the
    page shows, and the response cache."""
    defaults = {
        "PROXY_ACCESS_TOKEN": token,
        "ADMIN_TOKEN": admin_token,
        "TOKEN_STORE": "memory://",
        "CACHE_URL": "memory",
        # A realtime session reserves this much of the $1 budget up front (the mock's own
        # realtime endpoint answers it).
        "REALTIME_RESERVE_TOKENS": "2000",
        "ALLOWED_ORIGINS": f"http://127.0.0.1:{port},http://localhost:{port}",
        # A daily dollar budget at made-up prices, so the page shows the quota left.
        "BUDGET_PER_CALLER_USD": "1",
        "MODEL_PRICES": '{"mock-*": {"input": 100, "output": 400}, "gpt-*": '
        '{"input": 100, "output": 400}, "claude-*": {"input": 300, "output": 1500}, '
        '"gemini-*": {"input": 125, "output": 1000}}',
        # One base URL for several providers (docs/model-routing.md), all on the mock.
        "MODEL_ROUTES": "claude-*=anthropic,gemini-*=gemini",
        "MODEL_FALLBACKS": "gpt-4o>claude-sonnet-4-5>gemini-2.5-pro",
    }
    chosen = {name: os.environ.get(name) or value for name, value in defaults.items()}
    chosen["UPSTREAM_BASE_URL"] = f"http://127.0.0.1:{mock_port}/v1"
    chosen["UPSTREAM_API_KEY"] = "sk-mock-upstream-key-not-real"
    for provider in ("ANTHROPIC", "GEMINI"):  # the routes' providers are the mock too
        chosen[f"{provider}_API_KEY"] = f"fake-{provider.lower()}-key-not-real"
        chosen[f"{provider}_UPSTREAM"] = f"http://127.0.0.1:{mock_port}"
    return chosen


def cmd_demo(args: argparse.Namespace) -> int:
    from core.app import create_app
    from core.config import load_settings as load
    from core.devtools.mock_upstream import MockOptions, MockUpstream
    from core.server.runner import serve_together

    token = os.environ.get("PROXY_ACCESS_TOKEN") or "demo-" + secrets.token_urlsafe(18)
    admin_token = "demo-admin-" + secrets.token_urlsafe(32)
    env = {**os.environ, **demo_environment(args.port, args.mock_port, token, admin_token)}
    try:
        settings = load(env)
    except ConfigError as exc:  # a bad value in the caller's own environment or .env
        for problem in exc.problems:
            print(f"llm-proxy: refusing to start: {problem}", file=sys.stderr)
        return 2
    from core.devtools.demo_page import PageApp

    # The example chat page (examples/chat) at /, on the proxy's own origin.
    proxy = PageApp(create_app(settings))
    mock = MockUpstream(MockOptions(chunks=args.chunks, delay_ms=args.delay_ms))
    shown_token = env["PROXY_ACCESS_TOKEN"].split(",")[0]
    base = f"http://127.0.0.1:{args.port}"
    print(
        f"""
llm-proxy demo: proxy {base}  ->  mock upstream http://127.0.0.1:{args.mock_port}/v1

  token:    {shown_token}
  try it:   curl -N {base}/v1/chat/completions \\
              -H "Authorization: Bearer {shown_token}" -H "Content-Type: application/json" \\
              -d '{{"model":"mock-model","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}'
  SDK:      OpenAI(base_url="{base}/v1", api_key="{shown_token}")
  health:   {base}/health
  chat:     {base}/#token={shown_token}   (the example page, examples/chat)
  budget:   $1 a day per caller at made-up prices; {base}/proxy/usage shows what is left
  cache:    a request with "temperature":0, sent twice: the second answer comes from the
            cache (x-proxy-cache: hit), with no upstream call
  admin:    {base}/admin/sign-in   admin token: {env["ADMIN_TOKEN"]}
  realtime: ws://127.0.0.1:{args.port}/v1/realtime?model=mock-realtime  (the mock's sessions;
            AsyncOpenAI(base_url="{base}/v1", ...).realtime.connect(model="mock-realtime"))

Ctrl-C stops it.""",
        flush=True,
    )
    serve_together([(proxy, args.host, args.port), (mock, "127.0.0.1", args.mock_port)])
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    if args.url:
        from core.devtools.check_url import check_deployment

        token = args.token or os.environ.get("PROXY_ACCESS_TOKEN", "").split(",")[0].strip()
        return check_deployment(
            args.url,
            token=token or None,
            model=args.model,
            route=args.route,
            origin=args.origin,
            timeout=args.timeout,
        )
    from core.app import MisconfiguredApp, create_app

    try:
        settings = load_settings()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}")
        return 1
    app = create_app(settings)  # opens the stores, as `serve` will
    if isinstance(app, MisconfiguredApp):
        for problem in app.problems:
            print(f"error: {mask_url_passwords(problem)}")
        return 1
    from core.providers import enabled_providers

    # A deployment of provider routes alone has no default route: say so, and name the
    # routes it does serve, rather than print an empty target.
    default = (
        f"default route /v1 -> {settings.upstream_base_url}"
        if settings.upstream_base_url
        else "no default route (UPSTREAM_BASE_URL unset)"
    )
    routes = [
        p.prefix for p in enabled_providers(settings.provider_keys, settings.provider_upstreams)
    ]
    print(
        f"ok: {default}; "
        f"provider routes: {', '.join(routes) or 'none'}; "
        f"{len(settings.access_token_hashes)} access token(s); "
        f"CORS origins: {', '.join(settings.allowed_origins) or 'none (browsers refused)'}; "
        f"dashboard: {'/admin' if settings.admin_token else 'off (ADMIN_TOKEN unset)'}"
    )
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    from core.access.tokens_cli import run_tokens_command

    return run_tokens_command(args)


def cmd_usage(args: argparse.Namespace) -> int:
    from core.usage.cli import run_usage_command

    return run_usage_command(args)


def port_number(raw: str) -> int:
    """PORT or --port: a TCP port."""
    return _whole_number(raw, 1, 65535)


def worker_count(raw: str) -> int:
    """WORKERS or --workers: processes sharing the port, a handful per core at most."""
    return _whole_number(raw, 1, 256)


def _whole_number(raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-proxy", description="A streaming LLM API proxy.")
    parser.add_argument(
        "--env-file",
        default=os.environ.get("LLM_PROXY_ENV_FILE", ".env"),
        help="read settings from this file if it exists (default .env)",
    )
    parser.add_argument("--version", action="version", version=f"llm-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy, configured from the environment")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    # String defaults go through `type` too: PORT=abc is an argparse error naming --port,
    # not a traceback.
    serve.add_argument("--port", type=port_number, default=os.environ.get("PORT", str(DEMO_PORT)))
    serve.add_argument(
        "--workers",
        type=worker_count,
        default=os.environ.get("WORKERS", "1"),
        help="processes sharing the port (one per core on a VM or container)",
    )
    serve.set_defaults(func=cmd_serve)

    mock = sub.add_parser("mock-upstream", help="run a fake OpenAI/Anthropic/Gemini server")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=MOCK_PORT)
    mock.add_argument("--chunks", type=int, default=8, help="SSE chunks per streamed reply")
    mock.add_argument("--delay-ms", type=float, default=0.0, help="pause before each chunk")
    mock.add_argument(
        "--gzip",
        action="store_true",
        help="gzip replies to callers that accept it, as providers do",
    )
    mock.set_defaults(func=cmd_mock_upstream)

    demo = sub.add_parser("demo", help="the proxy in front of the mock upstream, ready to try")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=DEMO_PORT)
    demo.add_argument("--mock-port", type=int, default=MOCK_PORT)
    demo.add_argument("--chunks", type=int, default=24)
    demo.add_argument("--delay-ms", type=float, default=60.0)
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser(
        "check",
        help="validate the configuration, one line per problem; with --url, check a deployment",
    )
    check.add_argument(
        "--url",
        help="a deployed proxy's base URL: send a streamed request, an unauthenticated one "
        "and (with --origin) a CORS preflight through it, and say whether it streams",
    )
    check.add_argument("--token", help="the caller token (default: PROXY_ACCESS_TOKEN)")
    check.add_argument("--model", default="gpt-4o-mini", help="model to ask (default gpt-4o-mini)")
    check.add_argument("--route", default="/v1/chat/completions", help="the generation route")
    check.add_argument("--origin", help="a page origin that ALLOWED_ORIGINS lists")
    check.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    check.set_defaults(func=cmd_check)

    from core.access.tokens_cli import add_tokens_parser

    add_tokens_parser(sub, cmd_tokens)
    from core.usage.cli import add_usage_parser

    add_usage_parser(sub, cmd_usage)
    return parser


def load_env_file(path: str) -> None:
    """Settings from a local `.env` (for `serve`, `demo`, `check`, `tokens` on a laptop or
    VM); variables already in the environment win. Platforms set their own environment."""
    from core.env import read_env_file

    if os.path.isfile(path):
        for name, value in read_env_file(path).items():
            os.environ.setdefault(name, value)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load_env_file(args.env_file)
    from core.proxy.access_log import configure_logging

    configure_logging()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
