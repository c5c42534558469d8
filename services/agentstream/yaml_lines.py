"""Entries added to a block-style YAML mapping as lines of text, so that every line the
file had stays as it was: comments, blank lines, quoting, anchors, the wrapping of long
flow lists and the indentation of sequences. (A round trip through ruamel.yaml keeps the
comments but writes the rest in its own style: it re-wraps flow lists, re-indents block
sequences, moves a comment that follows an anchor, and drops an anchor that only a
commented example uses.)

ruamel.yaml's round-trip loader is used only to find where a mapping's last entry is
(its line and column); the new lines go after that entry's block.
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from agentstream.errors import ConfigurationError


def load(text: str) -> Any:
    """The document of ``text``, with the positions of its nodes (ruamel round trip); its
    strings keep their quotes, so a value copied into a new entry is written as it was."""
    yaml = YAML()
    yaml.preserve_quotes = True
    return yaml.load(text)


def render(entries: dict[str, Any]) -> list[str]:
    """``entries`` as block-style YAML lines (flow style where a node asks for it), in the
    indentation these files use: mappings by 2, sequence items by 4 with the dash at 2."""
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # one entry per line, as written
    out = io.StringIO()
    yaml.dump(CommentedMap(entries), out)
    return out.getvalue().splitlines()


def insert_after_last_entry(
    lines: list[str], mapping: Any, new_lines: list[str], what: str,
) -> tuple[int, list[str]]:
    """Where ``new_lines`` go to become the last entries of ``mapping`` (a node of the
    document ``lines`` were loaded from), and those lines indented as its keys are.
    ``what`` names the mapping in the error a flow-style one gets."""
    # Its own entries' positions (a key merged in with `<<:` has none here).
    positions = mapping.lc.data.values() if isinstance(mapping, CommentedMap) and not mapping.fa.flow_style() else ()
    if not positions:
        raise ConfigurationError(
            f"The topology's {what} is not a block-style mapping with entries, so its lines cannot be added to it "
            f"untouched; write it as `key: value` lines, one per entry, or add the entry by hand."
        )
    key_line, key_col = max((position[0], position[1]) for position in positions)
    return block_end(lines, key_line, key_col), [" " * key_col + line for line in new_lines]


def block_end(lines: list[str], key_line: int, key_col: int) -> int:
    """The index after the last line of the entry whose key is on ``key_line`` at column
    ``key_col``: the lines after it that are indented deeper, comments among them
    included, and the items of a block sequence whose dashes are at the key's column (a
    style YAML allows for a mapping's value). A comment indented no deeper than the key
    belongs to what follows it."""
    end = key_line + 1
    for index in range(key_line + 1, len(lines)):
        stripped = lines[index].strip()
        indent = len(lines[index]) - len(lines[index].lstrip())
        item = indent == key_col and (stripped == "-" or stripped.startswith("- "))
        if stripped and not stripped.startswith("#") and indent <= key_col and not item:
            break
        if stripped and (indent > key_col or item):
            end = index + 1
    return end


def with_inserted(text: str, inserts: list[tuple[int, list[str]]]) -> str:
    """``text`` with each ``(index, lines)`` put before its line ``index`` (the end: after
    the last), in the text's own line ending."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()
    for index, new_lines in sorted(inserts, key=lambda insert: insert[0], reverse=True):
        lines[index:index] = new_lines
    return newline.join(lines) + (newline if text.endswith("\n") or not text else "")
