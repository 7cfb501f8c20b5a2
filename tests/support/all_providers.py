"""A proxy with every catalogue provider switched on, each pointed at one upstream on loopback."""

from __future__ import annotations

from core.providers import CATALOGUE, provider_env_names


def fake_key(env: str, n: int = 1) -> str:
    return f"sk-mock-{env.lower()}-key-{n}-not-real"


def all_providers_env(upstream_url: str) -> dict[str, str]:
    """Key and upstream variables for every catalogue provider (Ollama keyless)."""
    env: dict[str, str] = {}
    for record in CATALOGUE:
        key_name, upstream_name = provider_env_names(record)
        env[upstream_name] = upstream_url
        if not record.key_optional or record.name == "vllm":
            env[key_name] = fake_key(record.env)
    return env
