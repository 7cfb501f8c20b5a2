"""The platform-independent proxy: settings, auth, header hygiene, forwarding, errors."""
