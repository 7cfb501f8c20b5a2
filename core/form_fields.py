"""The `model` of a multipart form (OpenAI's transcriptions, translations, image edits and
variations, and video creation send one), read as strictly as a JSON body's.

Those routes spend, and name their model in a form field rather than JSON: without this
the proxy would see no model where the provider reads one. A form the proxy and the
provider could read differently is refused rather than guessed at: the field named twice
(in any case) or spelled otherwise, a part named twice or with RFC 2231's `name*=`, no
boundary, a part with no end, a boundary inside a part.
Only text fields are looked at; file parts are skipped, whatever their size.
"""

from __future__ import annotations

import re

from core.errors import BadRequest

# A header line folded onto the next (obsolete, but a lenient reader unfolds it).
_FOLDED = re.compile(rb"\r\n[ \t]+")
_DISPOSITION = re.compile(rb"^content-disposition:([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
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


def _disposition_names(disposition: bytes) -> list[str]:
    """Every `name` parameter of one Content-Disposition value, read as a header parser
    reads it (python-multipart uses this one): a `;` inside a quoted parameter is no
    parameter boundary, so a regex's reading and a provider's would differ."""
    from email.message import Message

    if _EXTENDED_NAME.search(disposition):
        # RFC 2231 (`name*=UTF-8''model`): python-multipart reads it as `name`.
        raise UnreadableForm("A multipart field is named with name*=; use name=.")
    header = Message()
    header["content-disposition"] = disposition.decode("latin-1")
    params = header.get_params(header="content-disposition", failobj=[]) or []
    names = []
    for key, value in params[1:]:
        if key.strip().lower().rstrip("*") != "name":
            continue
        if not isinstance(value, str):  # an RFC 2231 value however it was spelled
            raise UnreadableForm("A multipart field is named with name*=; use name=.")
        names.append(value)
    return names


def form_field(body: bytes, content_types: list[bytes], name: str) -> str | None:
    """The one value of text field `name` in a multipart form, or None if absent.
    `content_types`: the request's Content-Type header values, as sent (case kept).

    Read as the provider's form parser reads it, or refused where parsers differ: a
    delimiter opens a part only at the start of a line (elsewhere it is content to the
    provider); a part has at most one Content-Disposition, naming one field; the field is
    spelled exactly `name` (a parser matches names exactly: `Model` or ` model` is another
    field to it, and the provider would run its default model)."""
    delimiter = b"--" + boundary(content_types)
    wanted = name.lower()
    line_delimiter = b"\r\n" + delimiter
    # Every delimiter at a line start (or the body's): one elsewhere is part of some
    # content to a strict parser and a new part to a lenient one.
    if body.count(delimiter) != body.count(line_delimiter) + body.startswith(delimiter):
        raise UnreadableForm("The multipart form has its boundary inside a part.")
    parts = (b"\r\n" + body).split(line_delimiter)
    if len(parts) < 3 or not parts[-1].startswith(b"--"):
        raise UnreadableForm("The multipart form is not closed by its boundary.")
    values: list[tuple[str, bytes]] = []
    for part in parts[1:-1]:
        if part.startswith(b"--"):
            raise UnreadableForm("The multipart form goes on after its closing boundary.")
        if not part.lstrip(b" \t").startswith(b"\r\n"):
            # `--Bx`: a delimiter is followed by CRLF (or `--`); this line is content to a
            # strict parser and a new part to a lenient one.
            raise UnreadableForm("The multipart form has its boundary inside a part.")
        head, blank, content = part.partition(b"\r\n\r\n")
        if not blank:
            raise UnreadableForm("A part of the multipart form has no header end.")
        head = _FOLDED.sub(b" ", head)
        if b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b""):
            # A bare CR or LF ends a header line to one parser and not to another.
            raise UnreadableForm("A part's headers have a line break other than CRLF.")
        dispositions = _DISPOSITION.findall(head)
        if len(dispositions) > 1:
            raise UnreadableForm("A part of the multipart form has two Content-Dispositions.")
        for disposition in dispositions:
            names = _disposition_names(disposition)
            if len(names) > 1:
                raise UnreadableForm("A part of the multipart form is named twice.")
            if names and names[0].strip().lower() == wanted:
                values.append((names[0], content))
    if len(values) > 1:
        raise RepeatedFormField(f"The multipart form names {name!r} more than once; send it once.")
    if not values:
        return None
    sent_as, value = values[0]
    if sent_as != name:
        raise UnreadableForm(f"The multipart form names its {name!r} field {sent_as[:40]!r}.")
    if len(value) > _MAX_FIELD:
        raise UnreadableForm(f"The form field {name!r} is too long to be one.")
    return value.decode("utf-8", "replace").strip()
