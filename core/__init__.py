"""The platform-independent proxy: settings, auth, header hygiene, forwarding, errors."""

# The one place the version is written: pyproject.toml reads it, `llm-proxy --version`,
# /health and the access log's start-up line print it. CHANGELOG.md says what each one changed.
__version__ = "0.3.0"
