"""The dashboard at /admin: sign-in, tokens, usage, providers, kill switch, routes.

Built only when ADMIN_TOKEN is set, on the first /admin request (core/app.py).
`app.py` has the routes and the sign-in, `security.py` the cookie, CSRF and rate-limit
rules, `api.py` the JSON API, `static/` the pages (plain HTML/CSS/JS, no build step).
"""
