"""The hand-written OTLP span encoding (core/telemetry/spans.py), decoded with the
opentelemetry-proto messages as a collector would; W3C trace context and the samplers as
the SDK reads them."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from core.telemetry.spans import (
    SPAN_ATTRIBUTES,
    STATUS_ERROR,
    KeyValues,
    Sampler,
    encode_resource,
    encode_scope,
    encode_span,
    export_request,
    parse_traceparent,
    parse_tracestate,
    varint,
)
from tests.telemetry.otlp_receiver import attributes

TRACE = bytes(range(1, 17))
SPAN = bytes(range(20, 28))
PARENT = bytes(range(40, 48))


def decode(spans: list[bytes], resource: dict[str, Any] | None = None) -> Any:
    body = export_request(
        encode_resource(resource or {"service.name": "svc"}),
        encode_scope("llm_proxy"),
        spans,
    )
    return ExportTraceServiceRequest.FromString(body)


def test_varint_matches_protobuf() -> None:
    for number in (0, 1, 127, 128, 300, 2**32, 2**63 - 1):
        assert varint(number) == _reference_varint(number)
    assert len(varint(-1)) == 10


def _reference_varint(number: int) -> bytes:
    from google.protobuf.internal.encoder import _VarintBytes  # type: ignore[attr-defined]

    return bytes(_VarintBytes(number))


def test_a_span_decodes_with_every_field_and_attribute_type() -> None:
    values = {
        "text": "héllo ✓",
        "empty": "",
        "yes": True,
        "no": False,
        "count": 42,
        "zero": 0,
        "negative": -7,
        "big": 2**62,
        "ratio": 0.25,
        "list": ["stop", "length"],
        "dropped": object(),  # no attribute can hold it: left out, as the SDK does
        "too big": 2**64,
    }
    span = encode_span(
        KeyValues(SPAN_ATTRIBUTES),
        TRACE,
        SPAN,
        PARENT,
        "chat gpt-test",
        1_700_000_000_000_000_000,
        1_700_000_000_500_000_000,
        values,
        trace_state="vendor=value",
        remote_parent=True,
        events=(("llm_proxy.first_byte", 1_700_000_000_100_000_000),),
        status=STATUS_ERROR,
    )
    request = decode([span], {"service.name": "svc", "deployment.environment": "test"})
    [resource_spans] = request.resource_spans
    assert attributes(resource_spans.resource.attributes) == {
        "service.name": "svc",
        "deployment.environment": "test",
    }
    [scope_spans] = resource_spans.scope_spans
    assert scope_spans.scope.name == "llm_proxy"
    [decoded] = scope_spans.spans
    assert decoded.trace_id == TRACE and decoded.span_id == SPAN
    assert decoded.parent_span_id == PARENT and decoded.trace_state == "vendor=value"
    assert decoded.name == "chat gpt-test" and decoded.kind == 3  # SPAN_KIND_CLIENT
    assert decoded.start_time_unix_nano == 1_700_000_000_000_000_000
    assert decoded.end_time_unix_nano == 1_700_000_000_500_000_000
    expected = {k: v for k, v in values.items() if k not in ("dropped", "too big")}
    assert attributes(decoded.attributes) == expected
    assert decoded.attributes[0].value.WhichOneof("value") == "string_value"
    kinds = {pair.key: pair.value.WhichOneof("value") for pair in decoded.attributes}
    assert kinds["no"] == "bool_value" and kinds["zero"] == "int_value"
    assert kinds["ratio"] == "double_value" and kinds["list"] == "array_value"
    [event] = decoded.events
    assert (event.name, event.time_unix_nano) == ("llm_proxy.first_byte", 1_700_000_000_100_000_000)
    assert decoded.status.code == 2  # STATUS_CODE_ERROR
    assert decoded.flags == 0x300  # the parent is remote, as the SDK flags it


def test_a_root_span_and_an_unset_status() -> None:
    spans = [
        encode_span(KeyValues(SPAN_ATTRIBUTES), TRACE, SPAN, b"", "chat", 1, 2, {"a": 1}),
        encode_span(KeyValues(SPAN_ATTRIBUTES), TRACE, PARENT, SPAN, "upstream attempt", 1, 2, {}),
    ]
    root, child = decode(spans).resource_spans[0].scope_spans[0].spans
    assert root.parent_span_id == b"" and root.trace_state == ""
    assert root.status.code == 0 and root.HasField("status")
    assert root.flags == 0x100
    assert child.parent_span_id == SPAN and not child.attributes


def test_a_value_length_limit_cuts_strings() -> None:
    span = encode_span(
        KeyValues(SPAN_ATTRIBUTES, value_limit=3),
        TRACE,
        SPAN,
        b"",
        "x",
        1,
        2,
        {"s": "abcdef", "l": ["abcd"]},
    )
    [decoded] = decode([span]).resource_spans[0].scope_spans[0].spans
    assert attributes(decoded.attributes) == {"s": "abc", "l": ["abc"]}


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (f"00-{TRACE.hex()}-{SPAN.hex()}-01", (TRACE, SPAN, 1)),
        (f" 00-{TRACE.hex()}-{SPAN.hex()}-00 ", (TRACE, SPAN, 0)),
        (f"01-{TRACE.hex()}-{SPAN.hex()}-01-future", (TRACE, SPAN, 1)),
        (f"00-{TRACE.hex()}-{SPAN.hex()}-01-extra", None),
        (f"ff-{TRACE.hex()}-{SPAN.hex()}-01", None),
        (f"00-{'0' * 32}-{SPAN.hex()}-01", None),
        (f"00-{TRACE.hex()}-{'0' * 16}-01", None),
        (f"00-{TRACE.hex().upper()}-{SPAN.hex()}-01", None),
        ("garbage", None),
    ],
)
def test_traceparent_as_the_w3c_propagator_reads_it(
    header: str, parsed: tuple[bytes, bytes, int] | None
) -> None:
    assert parse_traceparent(header) == parsed


def test_tracestate_kept_as_the_sdk_keeps_it() -> None:
    assert parse_tracestate(["a=1,b=2", "c=3"]) == "a=1,b=2,c=3"
    assert parse_tracestate(["not valid=="]) == ""


def test_samplers() -> None:
    low = bytes(8) + (1).to_bytes(8, "big")
    high = bytes(8) + (2**64 - 1).to_bytes(8, "big")
    assert Sampler({}).sampled(high, None) and not Sampler({}).sampled(high, 0)
    assert Sampler({}).sampled(high, 1)
    off = Sampler({"OTEL_TRACES_SAMPLER": "always_off"})
    assert not off.sampled(low, 1)
    assert Sampler({"OTEL_TRACES_SAMPLER": "always_on"}).sampled(high, 0)
    assert Sampler({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}).sampled(low, 1)
    ratio = Sampler({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    reference = TraceIdRatioBased(0.5)
    for trace in (
        low,
        high,
        bytes(8) + (2**63 - 1).to_bytes(8, "big"),
        bytes(8) + (2**63).to_bytes(8, "big"),
    ):
        number = int.from_bytes(trace, "big")
        wanted = reference.should_sample(None, number, "x").decision.is_sampled()
        assert ratio.sampled(trace, None) == wanted
    unknown = Sampler({"OTEL_TRACES_SAMPLER": "xray"})
    assert unknown.sampled(high, None) and not unknown.sampled(high, 0)
