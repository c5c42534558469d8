"""The document-review desk's tools: plain typed functions, no Kafka code.

The specialist imports this file at start-up because the topology names it in
`tools_modules`; the agent's `tools` list says which of these its model may call.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from agentstream.tools import tool

_DATA = Path(__file__).with_name("documents.json")


@functools.cache
def _documents() -> dict[str, dict[str, Any]]:
    # Read on first use, not at import: importing the module has no side effects.
    records = json.loads(_DATA.read_text(encoding="utf-8"))["documents"]
    return {record["document_id"].upper(): record for record in records}


@tool
def list_documents() -> list[dict[str, str]]:
    """List the documents on file: their ids and titles."""
    return [{"document_id": doc_id, "title": doc["title"]} for doc_id, doc in _documents().items()]


@tool
def find_clause(document_id: str, clause: str) -> str:
    """Quote one clause of a document, e.g. its termination or governing-law clause.

    Args:
        document_id: The document's id, for example MSA-2041.
        clause: The clause to quote, for example "termination".
    """
    document = _documents().get(document_id.strip().upper())
    if document is None:
        return f"No document {document_id!r}; known ids are {sorted(_documents())}."
    text = document["clauses"].get(clause.strip().lower())
    if text is None:
        return f"{document_id} has no {clause!r} clause; its clauses are {sorted(document['clauses'])}."
    return f"{document_id} ({clause}): {text}"


@tool
def word_count(document_id: str) -> int | str:
    """Count the words of a document's clauses.

    Args:
        document_id: The document's id, for example NDA-0007.
    """
    document = _documents().get(document_id.strip().upper())
    if document is None:
        return f"No document {document_id!r}; known ids are {sorted(_documents())}."
    return sum(len(text.split()) for text in document["clauses"].values())
