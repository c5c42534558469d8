"""Avro single-object encoding of the records in ``schemas/``.

Wire format (Avro spec, "Single object encoding"): the marker ``C3 01``, the 8-byte
little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form,
then the Avro binary body. Any Avro library can decode it with the schema files alone.

The codec works on Avro's *physical* types: a ``timestamp-millis`` field is an ``int``
of epoch milliseconds both ways. Logical types stay in the schema files for other
readers, but converting to ``datetime`` and back on every message would cost time on
the hot path and make callers juggle two representations.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _crc64_hex
from fastavro.validation import ValidationError, validate

from agentstream.errors import AgentStreamError, ConfigurationError
from agentstream.settings import SCHEMAS_DIR_ENV

__all__ = [
    "MAGIC",
    "EncodeError",
    "NotAvroError",
    "SchemaSet",
    "SerdeError",
    "UndecodableError",
    "UnknownFingerprintError",
    "UnknownSchemaError",
    "WrongSchemaError",
    "parsing_canonical_form",
]

MAGIC = b"\xc3\x01"
_HEADER_LEN = len(MAGIC) + 8
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# What fastavro raises on bytes that are not a valid body for the schema (fuzzed:
# EOFError on truncation, IndexError on a bad union/enum index or a varint running past
# the end, UnicodeDecodeError (a ValueError) on bad UTF-8).
_DECODE_FAILURES = (EOFError, IndexError, ValueError, OverflowError, KeyError, TypeError)
# What fastavro raises when a record does not fit the schema.
_ENCODE_FAILURES = (ValueError, TypeError, KeyError, AttributeError, OverflowError)


class SerdeError(AgentStreamError):
    """Bytes could not be decoded or a record could not be encoded."""


class NotAvroError(SerdeError):
    """The bytes do not start with the single-object marker and a fingerprint."""


class UnknownFingerprintError(SerdeError):
    """The writer schema's fingerprint is not one of the loaded schemas."""

    def __init__(self, message: str, fingerprint: bytes) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


class UndecodableError(SerdeError):
    """The body does not decode with the writer schema, or bytes are left over."""


class WrongSchemaError(SerdeError):
    """The bytes were written with another schema than the one the caller expects."""

    def __init__(self, message: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class EncodeError(SerdeError):
    """A record does not match its schema."""


class UnknownSchemaError(SerdeError):
    """A schema name that is not loaded (developer misuse)."""


def parsing_canonical_form(schema: Any, *, logical_as_object: bool = False) -> str:
    """The Parsing Canonical Form of a fastavro-parsed schema (full names resolved).

    By default a primitive carrying a logical type is written as its simple name
    (``"long"``), as the Java reference implementation and fastavro do. With
    ``logical_as_object=True`` it is written ``{"type":"long"}``, as the Apache ``avro``
    Python package (1.12) does; we only need that form to recognise such writers.
    """

    def form(node: Any) -> str:
        if isinstance(node, list):
            return f"[{','.join(form(branch) for branch in node)}]"
        if isinstance(node, str):  # a primitive name or a reference to a named type
            return json.dumps(node)
        kind = node["type"]
        if isinstance(kind, (dict, list)):  # {"type": {...}} wraps another schema
            return form(kind)
        if kind in _PRIMITIVES:
            return f'{{"type":"{kind}"}}' if logical_as_object and len(node) > 1 else f'"{kind}"'
        if kind == "array":
            return f'{{"type":"array","items":{form(node["items"])}}}'
        if kind == "map":
            return f'{{"type":"map","values":{form(node["values"])}}}'
        head = f'{{"name":{json.dumps(node["name"])},"type":'
        if kind == "enum":
            return f'{head}"enum","symbols":{json.dumps(node["symbols"], separators=(",", ":"))}}}'
        if kind == "fixed":
            return f'{head}"fixed","size":{int(node["size"])}}}'
        fields = ",".join(f'{{"name":{json.dumps(f["name"])},"type":{form(f["type"])}}}' for f in node["fields"])
        return f'{head}"record","fields":[{fields}]}}'

    return form(schema)


def _fingerprint(canonical_form: str) -> bytes:
    # fastavro returns the little-endian bytes as hex, which is the on-wire order.
    return bytes.fromhex(_crc64_hex(canonical_form, "CRC-64-AVRO"))


def _physical(schema: Any) -> Any:
    """A copy of a schema's JSON without ``logicalType``, so fastavro reads raw ints."""
    if isinstance(schema, list):
        return [_physical(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if k != "logicalType"}
    if isinstance(out.get("type"), (dict, list)):
        out["type"] = _physical(out["type"])
    for key in ("items", "values"):
        if key in out:
            out[key] = _physical(out[key])
    if "fields" in out:
        out["fields"] = [{**f, "type": _physical(f["type"])} for f in out["fields"]]
    return out


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return " or ".join(_describe(s) for s in schema)
    if isinstance(schema, str):
        return schema.rsplit(".", 1)[-1]
    if schema["type"] == "enum":
        return "one of " + ", ".join(schema["symbols"])
    if schema["type"] in ("record", "error", "fixed"):
        return "a " + _describe(schema["name"]) + " " + str(schema["type"])
    return str(schema["type"])


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explain(codec: _Codec, record: Mapping[str, Any], exc: Exception) -> str:
    """Name the bad field and value; only runs once encoding has already failed.

    fastavro's writer messages can omit the field ("'X' is not in list"); its validator
    names the field, the value and the expected type, but it ignores unknown fields,
    which the writer's own message already names.
    """
    try:
        validate(record, codec.parsed, raise_errors=True)
    except ValidationError as invalid:
        return "; ".join(f"{e.field} is {_short(e.datum)}, expected {_describe(e.schema)}" for e in invalid.errors)
    except Exception:  # the validator choked on a value the writer also rejected
        pass
    return str(exc)


class _Codec:
    """Everything the hot path needs for one schema, computed once."""

    __slots__ = ("accepted", "fingerprint", "header", "heads", "name", "parsed", "physical")

    def __init__(self, name: str, schema_json: Mapping[str, Any]) -> None:
        self.name = name
        self.physical = _physical(schema_json)
        # A fresh named-type registry per schema: every file defines its own Usage etc.
        self.parsed = parse_schema(self.physical, named_schemas={})
        self.heads: dict[str, Any] = {}  # last field -> the schema of the fields up to it (head())
        logical = parse_schema(dict(schema_json), named_schemas={})
        self.fingerprint = _fingerprint(parsing_canonical_form(logical))
        # Also accept what the Apache avro Python package writes: it fingerprints
        # logical-typed primitives differently from Java, fastavro and us.
        quirk = _fingerprint(parsing_canonical_form(logical, logical_as_object=True))
        self.accepted = (self.fingerprint, quirk) if quirk != self.fingerprint else (self.fingerprint,)
        self.header = MAGIC + self.fingerprint

    def head(self, through: str) -> Any:
        """The parsed schema of this record's fields up to and including ``through``: Avro
        writes fields in order, so it reads the start of a body and leaves the rest unread."""
        parsed = self.heads.get(through)
        if parsed is None:
            fields = self.physical["fields"]
            names = [f["name"] for f in fields]
            if through not in names:
                raise UnknownSchemaError(f"Schema {self.name} has no field {through!r}; its fields are {names}.")
            head = {**self.physical, "fields": fields[: names.index(through) + 1]}
            parsed = self.heads[through] = parse_schema(head, named_schemas={})
        return parsed


class SchemaSet:
    """The loaded schemas, by record name, with encode/decode in single-object form."""

    def __init__(self, schemas: Mapping[str, Mapping[str, Any]]) -> None:
        """Build from schema JSON by record name (``load`` reads them from files)."""
        self._by_name: dict[str, _Codec] = {}
        self._by_fingerprint: dict[bytes, _Codec] = {}
        for name, schema_json in schemas.items():
            codec = self._compile(name, schema_json)
            self._by_name[name] = codec
            for fingerprint in codec.accepted:
                self._by_fingerprint[fingerprint] = codec
        self._known = ", ".join(f"{c.name} ({c.fingerprint.hex()})" for c in self._by_name.values())

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaSet:
        """Load every ``*.avsc`` in ``directory``; the file name must be the record name.

        Without ``directory``: ``$AGENTSTREAM_SCHEMAS_DIR`` if set, else the repository's
        ``schemas/``. An explicit argument wins over the environment.
        """
        if directory is None:
            from_env = os.environ.get(SCHEMAS_DIR_ENV)
            directory = Path(from_env) if from_env else Path(__file__).resolve().parents[2] / "schemas"
        files = sorted(directory.glob("*.avsc"))
        if not files:
            raise ConfigurationError(
                f"No *.avsc schema files in {directory}; point {SCHEMAS_DIR_ENV} or the "
                "directory argument at the repository's schemas/ folder."
            )
        schemas: dict[str, Mapping[str, Any]] = {}
        for path in files:
            try:
                schemas[path.stem] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"Cannot read Avro schema {path}: {exc}; fix the file's JSON.") from exc
        return cls(schemas)

    @property
    def names(self) -> tuple[str, ...]:
        """The record names, in load order."""
        return tuple(self._by_name)

    def fingerprint(self, name: str) -> bytes:
        """The 8-byte CRC-64-AVRO fingerprint written after the marker for ``name``."""
        return self._codec(name).fingerprint

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Single-object bytes of ``record`` written with schema ``name``."""
        codec = self._codec(name)
        out = io.BytesIO()
        out.write(codec.header)
        try:
            # strict_allow_default: a misspelt or unknown field is an error instead of
            # being dropped silently; missing fields that have a default get it.
            schemaless_writer(out, codec.parsed, record, strict_allow_default=True)
        except _ENCODE_FAILURES as exc:
            raise EncodeError(
                f"Cannot encode the record as {name}: {_explain(codec, record, exc)}. Fix the record so it "
                f"matches schemas/{name}.avsc (timestamps are int epoch milliseconds)."
            ) from exc
        return out.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """The schema name and the record that ``data`` holds."""
        codec = self._writer_of(data)
        return codec.name, self._read(codec, data, codec.parsed)

    def decode_as(self, name: str, data: bytes) -> dict[str, Any]:
        """The record in ``data``, which must have been written with schema ``name``."""
        expected = self._codec(name)
        self._check_writer(expected, data)
        return self._read(expected, data, expected.parsed)

    def _check_writer(self, expected: _Codec, data: bytes) -> None:
        codec = self._writer_of(data)
        if codec is not expected:
            raise WrongSchemaError(
                f"Expected a {expected.name} record but the bytes were written with schema {codec.name}; "
                f"the producer wrote the wrong record type to this topic, or read it as {codec.name}.",
                expected=expected.name,
                actual=codec.name,
            )

    def decode_head(self, name: str, data: bytes, through: str) -> dict[str, Any]:
        """The fields of ``data`` (written with schema ``name``) from the first up to and
        including ``through``, without decoding the others: for a reader that needs a few
        leading fields of a large record (the router's session gate reads 7 of a TaskResult's
        14, in half the time). The bytes left unread are not checked, so a corrupt tail goes
        unnoticed here; a corrupt head raises as in :meth:`decode_as`."""
        expected = self._codec(name)
        self._check_writer(expected, data)
        return self._read(expected, data, expected.head(through), whole=False)

    @staticmethod
    def _compile(name: str, schema_json: Mapping[str, Any]) -> _Codec:
        record_name = str(schema_json.get("name", "")).rsplit(".", 1)[-1]
        if record_name != name:
            raise ConfigurationError(
                f"Schema {name!r} defines record {record_name!r}; name the file after the record ({record_name}.avsc)."
            )
        try:
            return _Codec(name, schema_json)
        except Exception as exc:  # fastavro raises several types for an invalid schema
            raise ConfigurationError(f"Schema {name} is not a valid Avro schema: {exc}; fix {name}.avsc.") from exc

    def _codec(self, name: str) -> _Codec:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownSchemaError(
                f"Unknown schema {name!r}; the loaded schemas are {list(self._by_name)}."
            ) from None

    def _writer_of(self, data: bytes) -> _Codec:
        if len(data) < _HEADER_LEN or data[:2] != MAGIC:
            raise NotAvroError(
                f"Cannot decode {len(data)} bytes starting {bytes(data[:12])!r} as Avro single-object "
                "encoding: it must start with C3 01 and an 8-byte schema fingerprint. "
                "Produce the value with SchemaSet.encode or an Avro single-object encoder."
            )
        fingerprint = bytes(data[2:_HEADER_LEN])
        codec = self._by_fingerprint.get(fingerprint)
        if codec is None:
            raise UnknownFingerprintError(
                f"Unknown writer schema fingerprint {fingerprint.hex()}; the loaded schemas are "
                f"{self._known}. The producer used a schema this process does not have: "
                "deploy the producer's schemas/ files here.",
                fingerprint=fingerprint,
            )
        return codec

    @staticmethod
    def _read(codec: _Codec, data: bytes, schema: Any, *, whole: bool = True) -> dict[str, Any]:
        body = io.BytesIO(data)
        body.seek(_HEADER_LEN)
        try:
            record = cast("dict[str, Any]", schemaless_reader(body, schema))
        except _DECODE_FAILURES as exc:
            raise UndecodableError(
                f"The {len(data)}-byte value does not decode as {codec.name} ({type(exc).__name__}: {exc}); "
                "it is truncated or corrupt. Send it to the dead-letter topic."
            ) from exc
        if whole and body.tell() != len(data):
            raise UndecodableError(
                f"The value decodes as {codec.name} but {len(data) - body.tell()} trailing bytes remain; "
                "the value is corrupt or two values were concatenated. Send it to the dead-letter topic."
            )
        return record
