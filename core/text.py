"""Text from outside (a caller's model name, a JWT's subject, a token's label, a stored
value) as the proxy prints it to a terminal or writes it into a plain-text log line.

Printed raw, a control character acts: an escape sequence retitles the operator's window,
clears the screen or (OSC 52, on some terminals) writes the clipboard; CR and LF forge
report rows or log lines; a bidi override reorders what follows. Each character that is
not printable comes out as its Python escape (`\\x1b`, `\\r`, `\\u202e`), so the text
stays readable and nothing in it acts. JSON output needs none of this: json.dumps escapes
them already.

`well_formed` tells text that can be written as UTF-8 at all: JSON's `\\ud800` escape
decodes to a lone surrogate, which no encoder takes (a store's key, a reply's JSON, a span).
"""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every non-printable character (controls, format characters such as the
    bidi overrides, separators other than the space) written as its escape."""
    if text.isprintable():
        return text  # the common case: one scan in C
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def well_formed(text: str) -> bool:
    """Whether `text` is Unicode a UTF-8 encoder takes: no lone surrogate, which a JSON
    document can spell (`"\\ud800"`) yet no store, reply or log line can write."""
    if text.isascii():
        return True  # the common case: one scan in C
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
