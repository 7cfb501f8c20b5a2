"""The configuration reference, generated from the settings declarations.

`python -m core.settings_reference > docs/configuration.md` (or `make config-docs`) writes
it; tests/core/test_settings_reference.py fails when the page is stale, when a variable the
code reads is missing from it or from .env.example, or when one listed there is no longer
read. Nothing here runs at request time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from core.env import Setting, declared, default_of
from core.providers import CATALOGUE, provider_env_names
from core.records import Field

# Read by the entry points (`llm-proxy serve`, handlers/http.py), not by the proxy.
ENTRY_POINT_VARIABLES: tuple[tuple[str, str, str, str], ...] = (
    (
        "HOST",
        "127.0.0.1 (`llm-proxy serve`), 0.0.0.0 (handlers/http.py)",
        "text",
        "The address the server listens on.",
    ),
    (
        "PORT",
        "8787 (`llm-proxy serve`), 9000 (handlers/http.py)",
        "whole number",
        "The port the server listens on (Cloud Run, Fly and CloudBase set it).",
    ),
    (
        "WORKERS",
        "1",
        "whole number",
        "`llm-proxy serve`: processes sharing the port (limits and budgets then need a "
        "shared store).",
    ),
    (
        "LLM_PROXY_ENV_FILE",
        ".env",
        "path",
        "The file the `llm-proxy` command reads settings from (variables already set win).",
    ),
)

# Set by a platform and read to recognise it; never set them yourself.
PLATFORM_VARIABLES: tuple[tuple[str, str], ...] = (
    ("AWS_LAMBDA_FUNCTION_NAME", "AWS Lambda: client IP from the event, memory-store warnings."),
    ("AWS_LAMBDA_RUNTIME_API", "AWS Lambda: the Runtime API the streaming handler talks to."),
    ("VERCEL", "Vercel: client IP from x-real-ip."),
    ("K_SERVICE", "Cloud Run services and functions: client IP from X-Forwarded-For."),
)

# Telemetry (core/telemetry) is configured by the standard OpenTelemetry variables, read by
# the SDK itself when it is on, plus the proxy's own METRICS_TOKEN.
TELEMETRY_VARIABLES: tuple[tuple[str, str, str, str], ...] = (
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "unset (off)",
        "URL",
        "Turns OpenTelemetry traces and metrics on, exported over OTLP/HTTP to this collector.",
    ),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "unset", "URL", "Traces only, to this endpoint."),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "unset", "URL", "Metrics only, to this endpoint."),
    (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "http/protobuf",
        "text",
        "Only http/protobuf is supported; another value is refused in the log.",
    ),
    ("OTEL_TRACES_EXPORTER", "otlp", "text", "`none` turns traces off."),
    ("OTEL_METRICS_EXPORTER", "otlp", "text", "`none` turns metrics off."),
    ("OTEL_SDK_DISABLED", "false", "true/false", "Turns OpenTelemetry off whatever else is set."),
    ("OTEL_SERVICE_NAME", "llm-proxy", "text", "The service name on every span and metric."),
    (
        "OTEL_RESOURCE_ATTRIBUTES",
        "unset",
        "key=value list",
        "More resource attributes (deployment.environment=prod, ...).",
    ),
    ("OTEL_TRACES_SAMPLER", "parentbased_always_on", "text", "The standard sampler choice."),
    ("OTEL_TRACES_SAMPLER_ARG", "1.0", "number", "The traceidratio samplers' ratio, 0 to 1."),
    (
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "unset (no limit)",
        "number",
        "Span attribute strings are cut to this many characters.",
    ),
    (
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        "unset",
        "number",
        "As OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT, for spans; this one wins.",
    ),
    ("OTEL_METRIC_EXPORT_INTERVAL", "60000", "ms", "How often metrics are exported."),
    (
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
        "false",
        "true/false",
        "Capture prompts on spans, truncated and scrubbed of every key.",
    ),
    (
        "METRICS_TOKEN",
        "unset",
        "text, secret (never logged)",
        "Bearer token for `/metrics` on servers; unset, only a loopback scrape is answered.",
    ),
    (
        "PROMETHEUS_MULTIPROC_DIR",
        "a temporary folder",
        "path",
        "Where `serve --workers N` keeps the workers' counters for one `/metrics`.",
    ),
    (
        "PROMETHEUS_DISABLE_CREATED_SERIES",
        "false",
        "true/false",
        "`/metrics` leaves out the `_created` samples, as prometheus-client does.",
    ),
    (
        "WEB_CONCURRENCY",
        "1",
        "number",
        "Worker processes, as `--workers` (read by `/metrics` to add the workers up).",
    ),
)

# Model routing (core/routing.py): parsed as a pair, so declared here for the reference.
ROUTING_VARIABLES: tuple[tuple[str, str, str, str], ...] = (
    (
        "MODEL_ROUTES",
        "unset (off)",
        "pattern=provider list",
        "OpenAI-format requests on /v1 whose model matches go to that provider's OpenAI-compatible surface, e.g. `claude-*=anthropic,gemini-*=gemini`.",
    ),
    (
        "MODEL_FALLBACKS",
        "unset (off)",
        "model>model>... list",
        "Chains tried in turn on a connect failure, a 5xx or a 429 before the first byte, e.g. `gpt-4o>claude-sonnet-4-5`.",
    ),
)

# AWS Lambda: a secret named by reference instead of its value (handlers/aws/secrets.py).
SECRET_SUFFIXES = ("_SECRET_ID", "_SSM_PARAMETER")


def _groups() -> Iterator[tuple[str, str, list[tuple[str, str, str, str]]]]:
    """(title, intro, rows of (variable, default, type, description)) per package."""
    from core.access.guard_settings import GuardSettings
    from core.cache.settings import CacheSettings
    from core.config import SERVER_LIMITS, Settings
    from core.server.limits import ServerLimits
    from core.usage.settings import UsageSettings

    yield (
        "Model routing (core/routing.py)",
        "One base URL for every model; see the model-routing page. Off unless set.",
        list(ROUTING_VARIABLES),
    )
    yield (
        "Telemetry (core/telemetry)",
        "OpenTelemetry and Prometheus; see the observability page. Off unless set.",
        list(TELEMETRY_VARIABLES),
    )
    yield (
        "Proxy (core/config.py)",
        "The default route, callers' credentials, timeouts, stores and realtime.",
        [_row(item, spec) for item, spec in declared(Settings)],
    )
    limits = ServerLimits()
    yield (
        "Servers (core/server/)",
        "What a connection may hold (a request before it is authenticated, a reply its caller does not read); `llm-proxy serve`, "
        "handlers/http.py and the other long-running servers only.",
        [
            _row_of(spec, getattr(limits, name), type(getattr(limits, name)).__name__)
            for name, spec in SERVER_LIMITS.items()
        ],
    )
    yield (
        "Callers: sign-in, rate limits, policy (core/access/guard_settings.py)",
        "All off by default.",
        [_row(item, spec) for item, spec in declared(GuardSettings)],
    )
    yield (
        "Budgets and prices (core/usage/settings.py)",
        "Spend caps in US dollars over UTC calendar windows; off by default.",
        [_row(item, spec) for item, spec in declared(UsageSettings)],
    )
    yield (
        "Response cache (core/cache/settings.py)",
        "Off unless CACHE_URL is set.",
        [_row(item, spec) for item, spec in declared(CacheSettings)],
    )
    yield (
        "Provider routes (core/providers.py)",
        "Each provider's key switches on its route; a comma list of keys rotates, a comma "
        "list of upstreams spreads requests and fails over. `_UPSTREAM` overrides the origin.",
        list(_provider_rows()),
    )
    yield (
        "Entry points (core/cli.py, handlers/http.py)",
        "Read by the command line and the server entry point, not by the proxy.",
        [
            (name, f"`{default}`" if " " not in default else default, kind, text)
            for name, default, kind, text in ENTRY_POINT_VARIABLES
        ],
    )


def _provider_rows() -> Iterator[tuple[str, str, str, str]]:
    seen: set[str] = set()
    for record in CATALOGUE:
        if record.env in seen:
            continue  # two routes of one provider (Gemini) share its variables
        seen.add(record.env)
        key, upstream = provider_env_names(record)
        yield key, "unset", "secret, comma list", f"Keys for the {record.prefix} route."
        origin = f"`{record.upstream}`" if record.upstream else "unset (required for this route)"
        yield upstream, origin, "URL, comma list", f"The {record.name} origin."


def _row(item: Field, spec: Setting) -> tuple[str, str, str, str]:
    name, default, kind, text = _row_of(spec, default_of(item), str(item.type))
    if not item.repr:  # a key, a token, or a URL that may carry a password
        kind += ", secret (never logged)"
    return name, default, kind, text


def _row_of(spec: Setting, default: Any, annotation: str) -> tuple[str, str, str, str]:
    return (
        spec.env,
        _default_text(spec, default),
        _type_text(spec, default, annotation),
        (spec.description),
    )


def _default_text(spec: Setting, default: Any) -> str:
    if spec.shown_default is not None:
        shown = spec.shown_default
        return shown if " " in shown or shown == "unset" else f"`{shown}`"
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if isinstance(default, tuple):
        return f"`{','.join(default)}`" if default else "unset"
    if default == "":
        return "unset"
    if isinstance(default, float) and default == int(default):
        default = int(default)
    return f"`{default}`"


def _type_text(spec: Setting, default: Any, annotation: str) -> str:
    if isinstance(default, bool):
        return "true/false"
    if spec.choices:
        return "one of " + ", ".join(f"`{c}`" for c in spec.choices)
    if isinstance(default, int | float) and not spec.custom:
        kind = "whole number" if isinstance(default, int) else "number"
        unit = f" ({spec.unit})" if spec.unit else ""
        span = f"{_bound(spec.low)} to {_bound(spec.high)}"
        off = "; 0 = off" if spec.zero_is_off else ""
        return f"{kind}{unit}, {span}{off}"
    if annotation.startswith("tuple"):
        return "comma list"
    return "text"


def _bound(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "any"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:g}"


def documented_variables() -> set[str]:
    """Every variable the reference lists (platform variables included)."""
    names = {row[0] for _, _, rows in _groups() for row in rows}
    return names | {name for name, _ in PLATFORM_VARIABLES}


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m core.settings_reference`; edit the declarations in the",
        "     code (core/config.py and each package's settings module), not this page. -->",
        "",
        "Every setting is an environment variable, read once at start and validated: a bad",
        "value is refused with a line naming the variable (`llm-proxy check` prints them all).",
        "Numbers must be finite and within the bounds shown. A local `.env` is read by the",
        "`llm-proxy` command; `.env.example` lists every variable below.",
        "",
    ]
    for title, intro, rows in _groups():
        lines += [f"## {title}", "", intro, "", "| Variable | Default | Type | What it does |"]
        lines.append("|---|---|---|---|")
        lines += [
            f"| `{name}` | {default} | {kind} | {text} |" for name, default, kind, text in rows
        ]
        lines.append("")
    lines += [
        "## Secrets from AWS (handlers/aws/secrets.py)",
        "",
        "On AWS Lambda any variable may name its value instead of holding it:",
        "`<NAME>_SECRET_ID` (Secrets Manager) or `<NAME>_SSM_PARAMETER` (SSM Parameter Store),",
        "for example `UPSTREAM_API_KEY_SECRET_ID=llm-proxy/openai`. Setting both, or the",
        "variable and a reference, is refused.",
        "",
        "## Set by the platform",
        "",
        "Read to recognise where the proxy runs; never set them yourself.",
        "",
        "| Variable | Read for |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {text} |" for name, text in PLATFORM_VARIABLES]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
