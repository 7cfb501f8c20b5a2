"""`needle not in chunk` as the reply's hot paths write it: `chunk.replace(needle, b"") is chunk`.

Every event of a stream passes these tests (the scrubber's, the meter's, the usage-chunk
filter's), so their cost is the proxy's cost per event. On CPython 3.12 (callgrind, a
200-byte event):

- `chunk.find(needle) < 0`: about 1,300 instructions. `find` takes its arguments as a
  tuple (METH_VARARGS) and parses them on every call; the scan itself is a few dozen.
- `needle in chunk`: about 3,500. `bytes.__contains__` first tries the needle as an
  integer, and builds (then drops) a TypeError.
- `chunk.replace(needle, b"") is chunk`: about 630. `replace` takes its arguments as a
  vector (METH_FASTCALL), and with nothing to replace returns the very object it was
  called on (CPython's `return_self`), so no copy is made.

Where the needle is present the copy costs what a find would; a chunk that is not exact
`bytes` is always copied, which reads as "present": the long way, never a wrong answer.
tests/core/test_byte_tests.py holds the interpreter to this, so a release that changes it
fails in CI instead of slowing every stream.
"""

from __future__ import annotations


def absent(needle: bytes, data: bytes) -> bool:
    """`needle not in data`, as the hot paths test it inline (a call here costs more than
    the test: off the hot paths, and in the tests)."""
    return data.replace(needle, b"") is data
