"""AWS Lambda, buffered: API Gateway REST (v1) and HTTP (v2) APIs, ALB, Function URLs in
BUFFERED mode. Handler: `handlers.aws.buffered.handler`.

Mangum turns each event into an ASGI request and the whole response into the event
source's reply, so streams arrive at the caller in one piece at the end, and a reply is
capped at 6 MB. For token-by-token streaming use handlers/aws/stream.py, behind a
Function URL or a REST API whose integration streams.
"""

from __future__ import annotations

from mangum import Mangum

from handlers.aws.secrets import create_app_with_secrets

app = create_app_with_secrets()

# lifespan="off": Mangum would run the app's startup and shutdown around every
# invocation, and shutdown closes the upstream pool; without it the pool stays warm on
# Mangum's one event loop for the life of the instance.
handler = Mangum(app, lifespan="off")  # type: ignore[arg-type]  # Mangum wants a Coroutine return
