"""The stages a deployment runs: each feature's contribution, joined in the order given.

The features are listed, in stage order, by the composition root (core/app.py `FEATURES`);
each builds its own part from the deployment's settings in its own package (core/access,
core/usage, core/cache, core/realtime). Joining is all that happens here, the way Starlette
folds its middleware list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from core.access.identify import build_identify

if TYPE_CHECKING:
    from core.access.credentials import TokenCheck
    from core.access.identify import Identify
    from core.access.status import ServiceStatus
    from core.stages import Check, Deployment, Feature, Settler


class Pipeline(NamedTuple):
    """The stages a deployment runs, decided once at start."""

    identify: Identify
    # Admission rules that decide on the head alone, then those that need the body.
    before_body: tuple[Check, ...] = ()
    after_body: tuple[Check, ...] = ()
    # Extra readers at settlement (the usage ledger, telemetry).
    settlers: tuple[Settler, ...] = ()
    # Some settler reads every reply's usage (the ledger, OpenTelemetry): every reply is
    # metered. Prometheus alone counts the tokens of replies metered for a rule anyway.
    meter_every_reply: bool = False
    # Some rule decides on the body (scopes, policy, limits, budgets): JSON is parsed with
    # the repeated-field checks. Otherwise it is only checked to be JSON, by the C decoder.
    strict_json: bool = True
    # The kill switch and schedule: checked by every proxy route (the usage report too),
    # and again while a realtime session is open.
    status: ServiceStatus | None = None


def build_pipeline(
    deployment: Deployment,
    features: Iterable[Feature],
    token_check: TokenCheck,
    *,
    status: ServiceStatus | None = None,
    telemetry: Settler | None = None,
    telemetry_meters: bool = False,
) -> Pipeline:
    """Each feature's checks appended after those of the features before it, per stage."""
    before: list[Check] = []
    after: list[Check] = []
    settlers: list[Settler] = []
    # The token's scopes or a guard rule decide on the body's fields: parsed strictly.
    strict_json = deployment.settings.guard.enabled
    for feature in features:
        contribution = feature(deployment)
        if contribution is None:
            continue
        before.extend(contribution.before_body)
        after.extend(contribution.after_body)
        settlers.extend(contribution.settlers)
        strict_json = strict_json or contribution.strict_json
    meter_every_reply = bool(settlers) or telemetry_meters
    if telemetry is not None:
        settlers.append(telemetry)  # last: it reads the cost the ledger's settler priced
    return Pipeline(
        identify=build_identify(deployment.settings, token_check),
        before_body=tuple(before),
        after_body=tuple(after),
        settlers=tuple(settlers),
        meter_every_reply=meter_every_reply,
        strict_json=strict_json,
        status=status,
    )
