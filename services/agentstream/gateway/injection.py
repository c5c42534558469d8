"""A prompt-injection heuristic: flags a task whose input reads like an attempt to override
the agents' instructions. It never blocks (false positives are common); the flag goes into
the task's metadata so the agents, a reviewer or a dashboard can weigh it.
"""

from __future__ import annotations

import re

FLAG = "prompt_injection_suspected"  # the metadata key; its value names the patterns that matched

# Phrases seen in injection attempts (instruction override, role play, prompt extraction).
_PATTERNS: dict[str, re.Pattern[str]] = {
    "override": re.compile(r"\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|earlier|all)\b.{0,20}"
                           r"\b(instructions?|prompts?|rules?|directions?)\b", re.I | re.S),
    "system_prompt": re.compile(r"\b(reveal|print|show|repeat|leak)\b.{0,40}\b(system|hidden|initial)\s+"
                                r"(prompt|instructions?|message)\b", re.I | re.S),
    "role_play": re.compile(r"\b(you are now|act as|pretend (to be|you are)|from now on you)\b", re.I),
    "fake_role": re.compile(r"(^|\n)\s*(system|assistant|developer)\s*:", re.I),
    "jailbreak": re.compile(r"\b(jailbreak|DAN mode|developer mode)\b", re.I),
}


def suspected_injection(text: str) -> list[str]:
    """The names of the patterns ``text`` matches (empty: nothing suspicious)."""
    return [name for name, pattern in _PATTERNS.items() if pattern.search(text)]


def flag_metadata(metadata: dict[str, str], text: str) -> dict[str, str]:
    """``metadata`` with the injection flag set when ``text`` looks suspicious. The flag is
    the gateway's word alone: a caller's own value of the key is dropped, so a task cannot
    arrive marked clean (or suspicious) by its sender."""
    found = suspected_injection(text)
    kept = {key: value for key, value in metadata.items() if key != FLAG}
    return {**kept, FLAG: ",".join(found)} if found else kept
