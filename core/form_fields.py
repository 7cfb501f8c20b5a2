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

# A header line folded onto the next (obsolete, but a lenient reader unfolds it).
_FOLDED = re.compile(rb"\r\n[ \t]+")
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


def boundary(content_types: list[bytes]) -> bytes:
    """The form's boundary, read as a header parameter parser reads it (quotes, case of
    the name, the value's own case kept): exactly one Content-Type, with exactly one
    plain `boundary` parameter, or the form is refused."""
    from email.message import Message  # loaded already: http.client (httpx) imports it

    if len(content_types) != 1:
        raise UnreadableForm("The request has more than one Content-Type.")
    header = Message()
    header["content-type"] = content_types[0].decode("latin-1")
    params = header.get_params(failobj=[]) or []
    named = [(key.lower(), value) for key, value in params[1:]]
    found = [value for key, value in named if key.rstrip("*") == "boundary"]
    if len(found) != 1 or not isinstance(found[0], str) or not 0 < len(found[0]) <= 200:
        raise UnreadableForm("The multipart form needs one plain boundary in its Content-Type.")
    return found[0].encode("latin-1")


def form_field(body: bytes, content_types: list[bytes], name: str) -> str | None:
    """The one value of text field `name` in a multipart form, or None if absent.
    `content_types`: the request's Content-Type header values, as sent (case kept)."""
    delimiter = b"--" + boundary(content_types)
    wanted = name.lower().encode()
    values: list[bytes] = []
    parts = body.split(delimiter)
    if len(parts) < 3 or not parts[-1].startswith(b"--"):
        raise UnreadableForm("The multipart form is not closed by its boundary.")
    for part in parts[1:-1]:
        head, blank, content = part.partition(b"\r\n\r\n")
        if not blank:
            raise UnreadableForm("A part of the multipart form has no header end.")
        head = _FOLDED.sub(b" ", head)
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
