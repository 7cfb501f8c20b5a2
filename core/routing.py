"""MODEL_ROUTES and MODEL_FALLBACKS as settings: parsed and checked at start with the rest
(core/config.py), so a route to a provider with no OpenAI-compatible surface or no key, or a
chain naming a model no route serves, is refused with one line each. The routing itself is
core/proxy/model_routes.py."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import NamedTuple

from core.providers import CATALOGUE, Provider


class RoutingSettings(NamedTuple):
    """MODEL_ROUTES as (pattern, provider name) pairs, first match wins; MODEL_FALLBACKS as
    chains of model names, each tried in turn."""

    routes: tuple[tuple[str, str], ...] = ()
    fallbacks: tuple[tuple[str, ...], ...] = ()

    @property
    def on(self) -> bool:
        return bool(self.routes or self.fallbacks)


class _Parsed(NamedTuple):
    """MODEL_ROUTES read: model patterns with their routes, and fallback chains."""

    routes: list[tuple[str, str]]
    chains: list[tuple[str, ...]]


def _surfaces() -> dict[str, Provider]:
    """Each catalogue provider with an OpenAI-compatible surface, by name."""
    found: dict[str, Provider] = {}
    for record in CATALOGUE:
        if record.openai_surface is not None:
            found.setdefault(record.name, record)
    return found


def parse_routing_settings(
    env: Mapping[str, str],
    problems: list[str],
    enabled: list[Provider],
    default_route: bool,
) -> RoutingSettings:
    """MODEL_ROUTES and MODEL_FALLBACKS, one sentence per problem. `enabled` are the
    catalogue records the settings switch on; `default_route` whether UPSTREAM_BASE_URL
    serves /v1 (then it serves every model no route claims)."""
    parsed = _Parsed([], [])
    surfaces = _surfaces()
    enabled_names = {record.name for record in enabled}
    for entry in _split(env.get("MODEL_ROUTES", ""), ","):
        pattern, sep, name = (part.strip() for part in entry.partition("="))
        if not sep or not pattern or not name:
            problems.append(
                f"MODEL_ROUTES entries look like claude-*=anthropic (pattern=provider), "
                f"got {entry[:100]!r}"
            )
            continue
        record = next((r for r in CATALOGUE if r.name == name), None)
        if record is None:
            problems.append(
                f"MODEL_ROUTES routes {pattern!r} to {name!r}, which is not a provider this "
                f"proxy knows (providers with an OpenAI-compatible surface: "
                f"{', '.join(sorted(surfaces))})"
            )
        elif name not in surfaces:
            problems.append(
                f"MODEL_ROUTES routes {pattern!r} to {name}, which has no OpenAI-compatible "
                f"surface (providers with one: {', '.join(sorted(surfaces))})"
            )
        elif name not in enabled_names:
            needed = f"{record.env}_UPSTREAM" if record.key_optional else f"{record.env}_API_KEY"
            problems.append(
                f"MODEL_ROUTES routes {pattern!r} to {name}, which has no key: set {needed}"
            )
        else:
            parsed.routes.append((pattern, name))
    heads: set[str] = set()
    for entry in _split(env.get("MODEL_FALLBACKS", ""), ","):
        chain = tuple(_split(entry, ">"))
        if len(chain) < 2:
            problems.append(
                f"MODEL_FALLBACKS chains look like gpt-4o>claude-sonnet-4-5 (two models or "
                f"more), got {entry[:100]!r}"
            )
            continue
        if len(set(chain)) != len(chain):
            problems.append(f"MODEL_FALLBACKS names a model twice in {entry[:100]!r}")
            continue
        unserved = [
            model
            for model in chain
            if not default_route
            and not any(fnmatch.fnmatchcase(model, p) for p, _ in parsed.routes)
        ]
        if unserved:
            problems.append(
                f"MODEL_FALLBACKS names {unserved[0]!r}, which no route serves (no MODEL_ROUTES "
                "pattern matches it and UPSTREAM_BASE_URL is not set)"
            )
            continue
        twice = [model for model in chain[:-1] if model in heads]
        if twice:
            problems.append(
                f"MODEL_FALLBACKS falls back from {twice[0]!r} in two chains: each model may "
                "have one next model"
            )
            continue
        heads.update(chain[:-1])
        parsed.chains.append(chain)
    return RoutingSettings(tuple(parsed.routes), tuple(parsed.chains))


def _split(raw: str, separator: str) -> list[str]:
    return [part.strip() for part in raw.split(separator) if part.strip()]
