"""JSON for the per-task hot paths: checkpoint values, transcripts, request digests.

orjson (a maintained Rust extension, the field's fast JSON library) encodes and decodes
several times faster than the standard library, whose encoder was the largest self cost of
a specialist's event-loop thread (issue #18). Where orjson would write or read something
other than what the standard library did, this module uses the standard library instead, so
nothing already written, hashed or compared changes meaning:

- ``dumps``: compact UTF-8 JSON. orjson refuses ints beyond 64 bits, non-str dict keys,
  strings with lone surrogates, dataclasses and datetimes (passed through, see below): those
  values fall back to the standard encoder (compact, ASCII-escaped, as the checkpoint table
  always wrote), so no value that encoded before fails now. One difference stays: NaN and
  ±Infinity are written as ``null`` (standard JSON has no such tokens; the standard library
  wrote non-standard ``NaN``), so such a float in a table value reads back as None (our code
  computes none; one could only come from outside, e.g. in a provider's tool arguments).
  Finding them first would cost a walk of every value in Python, more than orjson saves.
- ``loads``: reads what either encoder wrote. orjson refuses ``NaN``/``Infinity`` tokens and
  lone-surrogate escapes (the standard reader takes them), and it reads an integer beyond
  64 bits as a float, silently: text with a run of 19 or more digits goes to the standard
  reader, which keeps such an integer exact.
- ``canonical``: the bytes of ``json.dumps(value, sort_keys=True, separators=(",", ":"),
  ensure_ascii=False, default=str)`` (request digests), identical by construction: orjson's
  output is kept only for values it writes the same way (str, int, bool, None, lists,
  tuples, str-keyed dicts, and floats it spells as Python's repr does); anything else (a
  subclass, dataclass, datetime — the values ``default=str`` would have turned into text —,
  a big int, a float below 1e-4, spelt ``1e-05``/``1e-5`` differently) takes the standard path.
  The one type orjson writes natively that ``default=str`` spells otherwise is a plain
  ``enum.Enum`` member (not a str or int enum), which JSON-decoded values (a provider's tool
  arguments, a checkpoint's) never hold. ``canonical_without_numbers``: the same bytes for a
  value without numbers, without the float check (a scan of every byte).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Dataclasses and datetimes are passed to ``default`` rather than encoded by orjson, so they
# meet the standard encoder's rule (an error there, ``str()`` in ``canonical``) as before.
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS | _PASSTHROUGH
# Built once: json.dumps with options builds an encoder per call.
_STD_COMPACT = json.JSONEncoder(separators=(",", ":"))
_STD_COMPACT_SORTED = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
_STD_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str)
# A run of 19+ digits may be an integer orjson reads as a float (beyond -2**63 .. 2**64-1).
# Found by mapping every digit to "0" and anything else to " " (bytes.translate, a C loop;
# a regex scan costs several times orjson's whole decode).
_DIGIT_BYTES = frozenset(b"0123456789")
_DIGITS_AS_ZEROS = bytes(ord("0") if byte in _DIGIT_BYTES else ord(" ") for byte in range(256))
_LONG_NUMBER = b"0" * 19
# An exponent is a digit, "e", then a sign or a digit. Mapping digits to "0", signs to "+",
# "e" to itself and anything else to " " leaves "0e0" or "0e+" wherever one may be: one C
# pass and two substring searches (a Python loop over every "e" of a request's text cost
# ~50 times orjson's whole encode; a regex ~2 times this).
_EXPONENT_MAP = bytes(ord("0") if byte in _DIGIT_BYTES else ord("+") if byte in b"+-" else byte if byte == ord("e")
                      else ord(" ") for byte in range(256))


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """``value`` as compact UTF-8 JSON (keys sorted when ``sort_keys``)."""
    try:
        return orjson.dumps(value, option=_PASSTHROUGH | orjson.OPT_SORT_KEYS if sort_keys else _PASSTHROUGH)
    except orjson.JSONEncodeError:
        return (_STD_COMPACT_SORTED if sort_keys else _STD_COMPACT).encode(value).encode()


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """The value of JSON text written by ``dumps`` or by the standard library."""
    if isinstance(raw, str):
        try:
            data = raw.encode()
        except UnicodeEncodeError:  # a lone surrogate character: only the standard reader takes it
            return json.loads(raw)
    else:
        data = bytes(raw)
    if _LONG_NUMBER not in data.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def _refuse(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} goes to the standard encoder")


def canonical(value: Any) -> bytes:
    """The standard library's sorted, compact, unescaped JSON of ``value`` (``default=str``),
    byte for byte: for hashing, where older workers' hashes must still match. One known
    difference: a NaN or an infinity is ``null`` here (``NaN`` there); a provider's JSON
    holds none, so only a value built in Python could, and its digest then differs from an
    older worker's."""
    try:
        encoded = orjson.dumps(value, default=_refuse, option=_CANONICAL)
    except orjson.JSONEncodeError:
        encoded = None
    if encoded is None or _may_spell_a_float_otherwise(encoded):
        return _STD_CANONICAL.encode(value).encode()
    return encoded


def canonical_without_numbers(value: Any) -> bytes:
    """``canonical(value)`` for a value the caller knows holds no number (strings, None,
    booleans, and lists and str-keyed dicts of them: a conversation message's text parts).
    Without a float there is nothing orjson could spell differently, so the float check,
    which scans every byte of the output, is not made (it was most of a request digest's
    cost: a message's text is most of its bytes). Every other rule of ``canonical`` holds."""
    try:
        return orjson.dumps(value, default=_refuse, option=_CANONICAL)
    except orjson.JSONEncodeError:  # a str subclass (default=str), a lone surrogate: the standard path
        return _STD_CANONICAL.encode(value).encode()


def _may_spell_a_float_otherwise(encoded: bytes) -> bool:
    """Whether orjson may have written a float the standard library spells differently:
    one below 1e-4 (``1e-5`` or ``0.00001`` against ``1e-05``) or with an exponent at all
    (orjson before 3.11.7 wrote ``1e16`` against ``1e+16``). A string holding such text
    counts too: it only costs the standard path."""
    if b"0.0000" in encoded:
        return True
    mapped = encoded.translate(_EXPONENT_MAP)
    return b"0e0" in mapped or b"0e+" in mapped
