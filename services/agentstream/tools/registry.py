"""Tools: plain Python functions a model may call, and the registry that runs them.

``@tool`` turns a typed, documented function into a ``Tool``: its JSON schema comes from
the type hints, its description from the docstring. ``ToolRegistry.call`` validates the
model's arguments before the call and turns every failure (unknown tool, bad arguments,
exception, timeout) into an ``Error: ...`` result the model reads on its next turn, as
a human agent would read an error screen. A tool never crashes the agent loop.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import types
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, overload

from pydantic import ConfigDict, TypeAdapter, ValidationError

from agentstream.errors import ToolDefinitionError
from agentstream.telemetry import tracing

DEFAULT_TIMEOUT_S = 10.0
_MAX_TIMEOUT_S = 86_400.0  # a tool's own limit: one day
# Tool output goes back into the prompt and into checkpoints; a runaway result must not
# blow the context window or the Kafka message size.
DEFAULT_MAX_RESULT_CHARS = 8_000

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_SUPPORTED = "str, int, float, bool, Literal[...] of str, list[...] of those, and Optional[...] of any of them"
# Models often emit an id such as an order number as a JSON number; accept it for a str.
_LENIENT = ConfigDict(coerce_numbers_to_str=True)
# What a tool's non-str result is shown to the model as: json.dumps(ensure_ascii=False,
# default=str), built once (json.dumps with options builds an encoder per call).
_RESULT_JSON = json.JSONEncoder(ensure_ascii=False, default=str)
# The rule model providers document for a tool's name (OpenAI's and Anthropic's function
# names): a name outside it would otherwise reach the provider with the first model call. It
# also keeps commas out: a run's TOOL_CALL event names its tools comma-joined
# (specialist/lifecycle.py).
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call produced; ``content`` is the text the model sees either way."""

    name: str
    ok: bool
    content: str


@dataclass(frozen=True)
class Tool:
    """A function exposed to models. Calling the ``Tool`` calls the function unchanged."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    is_async: bool
    _adapters: Mapping[str, TypeAdapter[Any]] = field(repr=False)
    _required: frozenset[str] = field(repr=False)
    # Acts on the world (moves money, sends mail): a shadow run never calls it (rollout/dry_run.py).
    side_effects: bool = False
    # A sync function that never waits (a lookup in memory, a computation): called on the
    # event loop instead of a thread (see ToolRegistry._call).
    inline: bool = False
    # How long one call may run before it fails as timed out; None: the caller's limit
    # (the specialist's, DEFAULT_TIMEOUT_S). A slow upstream API gets a longer one here.
    timeout_s: float | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def schema(self) -> dict[str, Any]:
        """Provider-neutral schema; provider modules wrap it in their own envelope."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def validate(self, arguments: object) -> tuple[dict[str, Any], str | None]:
        """The validated keyword arguments, or a one-line description of what is wrong."""
        if type(arguments) is not dict and not isinstance(arguments, Mapping):  # a dict skips the ABC check
            return {}, f"arguments must be a JSON object, got {type(arguments).__name__}"
        # One pass over the arguments (this runs on every tool call); the problems are still
        # listed unexpected arguments first, then missing ones, then invalid values.
        unexpected: list[str] = []
        invalid: list[str] = []
        values: dict[str, Any] = {}
        for key, value in arguments.items():
            adapter = self._adapters.get(key)
            if adapter is None:
                unexpected.append(f"unexpected argument {key!r}")
                continue
            try:
                values[key] = adapter.validate_python(value)
            except ValidationError as exc:
                invalid.append(f"{key}: {exc.errors()[0]['msg']} (got {_clip(repr(value), 80)})")
        if not (unexpected or invalid) and arguments.keys() >= self._required:
            return values, None
        missing = [f"{key}: field required" for key in sorted(self._required) if key not in arguments]
        return values, "; ".join(unexpected + missing + invalid) or None


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None, side_effects: bool = False, inline: bool = False,
    timeout_s: float | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None, /, *, name: str | None = None, description: str | None = None,
    side_effects: bool = False, inline: bool = False, timeout_s: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Decorator: ``@tool`` or ``@tool(name=..., description=..., side_effects=True)`` over a
    sync or async function. ``side_effects``: the function acts on the world, so a shadow
    run of a candidate version must not call it. ``inline``: a sync function that never
    blocks (no I/O, no sleep, a few milliseconds at most) runs on the event loop rather than
    on a thread, which saves the hand-over; no timeout can interrupt it. ``timeout_s``: how
    long one call may run (seconds) before it fails as timed out, instead of the caller's
    limit (DEFAULT_TIMEOUT_S in a specialist).

    It only describes the function; adding it to a ``ToolRegistry`` is explicit, so
    importing a module of tools registers nothing anywhere.
    """

    def build(function: Callable[..., Any]) -> Tool:
        built = _build_tool(function, name or function.__name__, description)
        if inline and built.is_async:
            raise ToolDefinitionError(f"Tool {built.name!r} is async; inline=True is for sync functions that "
                                      "never block. Drop inline=True (an async tool already runs on the event loop).")
        _check_timeout(built.name, timeout_s, inline)
        return replace(built, side_effects=side_effects, inline=inline, timeout_s=timeout_s)

    return build(fn) if fn is not None else build


class ToolRegistry:
    """The tools an agent runtime can run, by name."""

    def __init__(
        self, tools: Iterable[Tool | Callable[..., Any]] = (), *, max_result_chars: int = DEFAULT_MAX_RESULT_CHARS
    ) -> None:
        self._tools: dict[str, Tool] = {}
        self.max_result_chars = max_result_chars
        for item in tools:
            self.register(item)

    def adopt(self, other: ToolRegistry) -> None:
        """Hold the tools of ``other``, as registered there: a view built per task (the
        durable one is) copies the table instead of registering every tool again."""
        self._tools = dict(other._tools)

    def register(self, item: Tool | Callable[..., Any]) -> Tool:
        """Add a ``Tool`` (or a plain function, described as ``@tool`` would)."""
        built = item if isinstance(item, Tool) else tool(item)
        if built.name in self._tools:
            raise ToolDefinitionError(f"A tool named {built.name!r} is already registered.")
        self._tools[built.name] = built
        return built

    def tool(self, fn: Callable[..., Any]) -> Tool:
        """Decorator form of ``register``: ``@registry.tool``."""
        return self.register(fn)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def all_tools(self) -> list[Tool]:
        """Every registered tool, by name (a view of this registry registers them again)."""
        return [self._tools[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def schemas(self, allowlist: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Schemas of the allowlisted tools (all when None), sorted by name.

        Sorted so the same allowlist always yields the same prompt and behaviour version;
        an allowlist naming an unregistered tool is a configuration error, not a no-op.
        """
        wanted = self.names() if allowlist is None else sorted(set(allowlist))
        unknown = [name for name in wanted if name not in self._tools]
        if unknown:
            raise ToolDefinitionError(f"Unknown tools {unknown} in allowlist; registered tools are {self.names()}.")
        return [self._tools[name].schema() for name in wanted]

    async def call(self, name: str, arguments: object, timeout_s: float = DEFAULT_TIMEOUT_S) -> ToolResult:
        """Run one tool; every failure comes back as ``ok=False`` with an explanation."""
        with tracing.tool_call(name) as span:  # the span `execute_tool {name}`
            result = await self._call(name, arguments, timeout_s)
            if not result.ok:
                span.failed("tool_error")
        return result

    async def _call(self, name: str, arguments: object, timeout_s: float) -> ToolResult:
        found = self._tools.get(name)
        if found is None:
            return ToolResult(name, False, f"Error: unknown tool {name!r}; available tools are {self.names()}.")
        kwargs, problem = found.validate(arguments)
        if problem:
            return ToolResult(name, False, f"Error: invalid arguments for {name}: {problem}. {_signature_hint(found)}")
        if found.inline:
            # Declared never to block: called here, with no thread (a wake-up and two
            # hand-overs of the GIL per call cost more than the call) and no timeout armed
            # (nothing could interrupt it).
            try:
                value = found.fn(**kwargs)
            except Exception as exc:
                return _failed(name, exc)
            return ToolResult(name, True, self._render(value))
        limit = timeout_s if found.timeout_s is None else found.timeout_s
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                value = await _invoke(found, kwargs)
        except Exception as exc:  # CancelledError is a BaseException and propagates
            if isinstance(exc, TimeoutError) and scope.expired():
                return ToolResult(name, False, f"Error: tool {name} timed out after {limit:g} s.")
            return _failed(name, exc)
        return ToolResult(name, True, self._render(value))

    async def call_many(
        self, calls: Sequence[tuple[str, object]], timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> list[ToolResult]:
        """Run the independent calls of one model turn concurrently; results in call order."""
        return list(await asyncio.gather(*(self.call(name, args, timeout_s) for name, args in calls)))

    def _render(self, value: Any) -> str:
        text = value if isinstance(value, str) else _RESULT_JSON.encode(value)
        if len(text) > self.max_result_chars:
            return text[: self.max_result_chars] + f"... [truncated, {len(text)} characters in all]"
        return text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _invoke(found: Tool, kwargs: dict[str, Any]) -> Awaitable[Any]:
    if found.is_async:
        return found.fn(**kwargs)  # type: ignore[no-any-return]
    # Sync tools may block on I/O; a thread keeps the event loop, shared by many sessions,
    # responsive. On timeout the thread runs on to its end: Python cannot kill it.
    return asyncio.to_thread(found.fn, **kwargs)


def _failed(name: str, exc: Exception) -> ToolResult:
    return ToolResult(name, False, f"Error: tool {name} failed: {type(exc).__name__}: {exc}")


def _signature_hint(found: Tool) -> str:
    properties = found.parameters["properties"]
    required = set(found.parameters["required"])
    parts = [
        f"{key} ({_type_label(spec)}{', required' if key in required else ''})" for key, spec in properties.items()
    ]
    return f"Expected arguments: {', '.join(parts) or 'none'}."


def _type_label(spec: Mapping[str, Any]) -> str:
    kind = spec.get("type", "string")
    label = "|".join(kind) if isinstance(kind, list) else str(kind)
    if "items" in spec:
        label += f" of {_type_label(spec['items'])}"
    return label


def _check_timeout(name: str, timeout_s: float | None, inline: bool) -> None:
    """Refuse a ``timeout_s`` that is not a positive number of seconds, or one on an inline tool."""
    if timeout_s is None:
        return
    # At most a day: asyncio.timeout adds the limit to the loop's clock, which a huge int overflows.
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= _MAX_TIMEOUT_S:
        raise ToolDefinitionError(f"Tool {name!r}: timeout_s={timeout_s!r} is not a positive, finite number of "
                                  f"seconds (at most {_MAX_TIMEOUT_S:g}). Give one such as timeout_s=30, or leave it "
                                  "out for the caller's limit.")
    if inline:
        raise ToolDefinitionError(f"Tool {name!r}: an inline tool runs on the event loop, where no timeout can "
                                  f"interrupt it, so timeout_s={timeout_s!r} would not hold. Drop inline=True "
                                  "(it then runs on a thread, under its timeout) or drop timeout_s.")


def _build_tool(fn: Callable[..., Any], name: str, description: str | None) -> Tool:
    if not _TOOL_NAME.fullmatch(name):
        raise ToolDefinitionError(
            f"Tool name {name!r} is not 1-64 ASCII letters, digits, '_' or '-' (the rule model providers apply "
            "to tool names); rename the function or pass @tool(name=...)."
        )
    summary, arg_docs = _parse_docstring(inspect.getdoc(fn) or "")
    description = description or summary
    if not description:
        raise ToolDefinitionError(f"Tool {name!r} has no description; add a docstring or pass description=.")
    try:
        hints = get_type_hints(fn)
    except Exception as exc:
        raise ToolDefinitionError(f"Cannot read the type hints of tool {name!r}: {exc}") from exc
    properties: dict[str, Any] = {}
    adapters: dict[str, TypeAdapter[Any]] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        where = f"Parameter {param.name!r} of tool {name!r}"
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ToolDefinitionError(f"{where} must be a plain keyword-passable parameter.")
        if param.name not in hints:
            raise ToolDefinitionError(f"{where} has no type hint; supported types are {_SUPPORTED}.")
        spec = _json_schema(hints[param.name], where)
        if param.name in arg_docs:
            spec["description"] = arg_docs[param.name]
        properties[param.name] = spec
        adapters[param.name] = TypeAdapter(hints[param.name], config=_LENIENT)
        if param.default is param.empty:
            required.append(param.name)
    parameters = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return Tool(
        name=name,
        description=description,
        parameters=parameters,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        _adapters=adapters,
        _required=frozenset(required),
    )


def _json_schema(annotation: Any, where: str) -> dict[str, Any]:
    """JSON schema of the small set of types models fill in reliably."""
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal and args and all(isinstance(value, str) for value in args):
        return {"type": "string", "enum": list(args)}
    if origin is list and len(args) == 1:
        return {"type": "array", "items": _json_schema(args[0], where)}
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = _json_schema(next(arg for arg in args if arg is not type(None)), where)
        nullable = {**inner, "type": [inner["type"], "null"]}
        if "enum" in inner:
            nullable["enum"] = [*inner["enum"], None]
        return nullable
    raise ToolDefinitionError(f"{where} has unsupported type {annotation!r}; supported types are {_SUPPORTED}.")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (text before ``Args:``) and per-parameter notes (Google style)."""
    summary_lines: list[str] = []
    arg_docs: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if not in_args:
            summary_lines.append(line)
            continue
        if stripped.endswith(":") and not line.startswith((" ", "\t")):
            break  # the next section (Returns:, Raises:)
        match = _ARG_LINE.match(line)
        if match and not line.startswith(" " * 8):
            current = match.group(1).lstrip("*")
            arg_docs[current] = match.group(2).strip()
        elif current and stripped:
            arg_docs[current] = f"{arg_docs[current]} {stripped}".strip()
    return " ".join(" ".join(summary_lines).split()), arg_docs
