"""uvicorn with the bounds a public server needs before authentication.

Nothing is imported here: settings import only `core.server.limits`, and a function handler
never loads uvicorn.
"""
