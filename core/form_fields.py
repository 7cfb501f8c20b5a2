"""The `model` of a multipart form (OpenAI's transcriptions, translations, image edits and
variations send one), read as strictly as a JSON body's.

Those routes spend, and name their model in a form field rather than JSON: without this
the proxy would see no model where the provider reads one. A form the proxy and the
provider could read differently is refused rather than guessed at: the field named twice
(in any case), a part named with RFC 2231's `name*=`, no boundary, a part with no end.
Only text fields are looked at; file parts are skipped, whatever their size.
"""

from __future__ import annotations

import re

from core.errors import BadRequest

_BOUNDARY = re.compile(rb'boundary=(?:"([^"]{1,200})"|([^\s;,"]{1,200}))', re.IGNORECASE)
_DISPOSITION = re.compile(rb"^content-disposition:(.*)$", re.IGNORECASE | re.MULTILINE)
# `name="model"` or `name=model`; `filename=` is another parameter.
_NAME = re.compile(rb'(?:^|;)\s*name\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.IGNORECASE)
_EXTENDED_NAME = re.compile(rb"(?:^|;)\s*name\*\s*=", re.IGNORECASE)
# A text field's value is short; a longer part is a file, never a model's name.
_MAX_FIELD = 4096


class UnreadableForm(BadRequest):
    code = "unreadable_form"


class RepeatedFormField(BadRequest):
    code = "repeated_field"  # as for a JSON body naming a field twice


def is_form(content_type: bytes) -> bool:
    return content_type.lstrip().startswith(b"multipart/form-data")


def form_field(body: bytes, content_type: bytes, name: str) -> str | None:
    """The one value of text field `name` in a multipart form, or None if absent."""
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise UnreadableForm("The multipart form has no boundary in its Content-Type.")
    delimiter = b"--" + (found.group(1) or found.group(2))
    wanted = name.lower().encode()
    values: list[bytes] = []
    parts = body.split(delimiter)
    if len(parts) < 3 or not parts[-1].startswith(b"--"):
        raise UnreadableForm("The multipart form is not closed by its boundary.")
    for part in parts[1:-1]:
        head, blank, content = part.partition(b"\r\n\r\n")
        if not blank:
            raise UnreadableForm("A part of the multipart form has no header end.")
        for disposition in _DISPOSITION.findall(head):
            if _EXTENDED_NAME.search(disposition):
                raise UnreadableForm("A multipart field is named with name*=; use name=.")
            named = _NAME.search(disposition)
            if named is None:
                continue
            field_name = named.group(1) if named.group(1) is not None else named.group(2)
            if field_name.strip().lower() == wanted:
                values.append(content.removesuffix(b"\r\n"))
    if len(values) > 1:
        raise RepeatedFormField(f"The multipart form names {name!r} more than once; send it once.")
    if not values:
        return None
    if len(values[0]) > _MAX_FIELD:
        raise UnreadableForm(f"The form field {name!r} is too long to be one.")
    return values[0].decode("utf-8", "replace").strip()
