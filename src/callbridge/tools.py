"""Function tools: a Python function the model may call, described from its signature.

`@tool` turns a function into a `Tool`: a name, a description and a JSON Schema of
its parameters (what the model sees in `session.update`), and `parse`, which turns
the model's `arguments` string into validated keyword arguments. The schema and the
validation both come from pydantic, from the function's annotations; the
descriptions come from its docstring. A parameter annotated `CallContext` is not the
model's to fill: the bridge passes the call's context to it.

This module is sans-I/O: it describes tools, validates arguments and encodes
results. Running a tool (on trio, in a worker thread or on an asyncio loop, under a
timeout) is `callbridge._toolrun`.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, NotRequired, overload

import attrs
import docstring_parser
import pydantic
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import CoreSchema
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from .agent import Agent, CallContext

__all__ = [
    "Handoff",
    "Tool",
    "ToolArgumentsError",
    "ToolResult",
    "as_tools",
    "tool",
]

Kind = Literal["trio", "thread", "asyncio"]
Outcome = Literal["ok", "error", "timeout", "invalid_arguments"]

#: what the Realtime API accepts as a function's name
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ToolArgumentsError(ValueError):
    """The model's arguments for a tool are not JSON, not an object, or do not fit
    the tool's parameters. The message is written for the model to read."""


@attrs.frozen(kw_only=True)
class Handoff:
    """Returned by a tool to hand the conversation to another agent.

    The bridge applies it; `message` (or, without one, `{"handoff": "<name>"}`) is
    what the model is told the tool returned.
    """

    agent: Agent
    message: str | None = None


@attrs.frozen(kw_only=True)
class ToolResult:
    """The outcome of one tool call: `output` goes back to the model as the
    `function_call_output` item's `output`; `detail` is for logs."""

    output: str
    outcome: Outcome
    handoff: Agent | None = None
    detail: str = ""

    @classmethod
    def of(cls, value: object) -> ToolResult:
        """A tool's return value: a `str` as is, a `Handoff` carried, anything else JSON."""
        if isinstance(value, Handoff):
            name = getattr(value.agent, "name", "agent")
            output = value.message if value.message is not None else _json({"handoff": name})
            return cls(output=output, outcome="ok", handoff=value.agent)
        return cls(output=_encode(value), outcome="ok")

    @classmethod
    def error(cls, exc: Exception) -> ToolResult:
        """The tool raised: the model reads the exception's type and message (never a
        traceback, which stays in the log)."""
        message = f"{type(exc).__name__}: {exc}"
        return cls(output=_json({"error": message}), outcome="error", detail=message)

    @classmethod
    def timed_out(cls, tool: Tool) -> ToolResult:
        message = f"{tool.name} timed out after {tool.timeout:g} s"
        return cls(output=_json({"error": message}), outcome="timeout", detail=message)

    @classmethod
    def invalid_arguments(cls, exc: ToolArgumentsError) -> ToolResult:
        return cls(output=_json({"error": str(exc)}), outcome="invalid_arguments",
                   detail=str(exc))


_ANY = pydantic.TypeAdapter[Any](Any)


def _encode(value: object) -> str:
    """A tool's return value as the text the model reads: a `str` as is, anything else
    as JSON (pydantic's encoder: models, dataclasses, datetimes...; what it cannot
    encode goes as `str(value)`)."""
    if isinstance(value, str):
        return str.__str__(value)  # a str subclass (a str Enum) by its value
    return _ANY.dump_json(value, fallback=str).decode()


def _json(value: dict[str, str]) -> str:
    return json.dumps(value, ensure_ascii=False)


@attrs.frozen(kw_only=True, eq=False)
class Tool:
    """A function the model may call: what it is told about it, and how to run it.

    `kind` says how it runs: "trio" (a coroutine function, awaited in the call's
    task), "thread" (a plain function, in a worker thread) or "asyncio" (a coroutine
    function for asyncio, through trio-asyncio). `context_params` are the parameters
    that receive the call's `CallContext`. `filler`, when `filler_after` is set, is
    what the agent says if the tool has not returned after that many seconds.
    Calling a `Tool` calls the function, so it can be unit-tested as it was.
    """

    name: str
    description: str
    #: JSON Schema of the arguments (an object), as sent to the model
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    kind: Kind
    #: seconds before the call is given up ("timeout"); None: no limit
    timeout: float | None = 30.0
    filler_after: float | None = None
    filler: str = "One moment while I check."
    context_params: tuple[str, ...] = ()
    _arguments: pydantic.TypeAdapter[dict[str, Any]] = attrs.field(repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def definition(self) -> dict[str, Any]:
        """The tool as a `session.update`'s `session.tools` entry."""
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": self.parameters}

    def parse(self, arguments: str) -> dict[str, Any]:
        """The model's `arguments` (a JSON object, as a string) as validated keyword
        arguments, defaults filled in; the `CallContext` ones are not included."""
        try:
            value = json.loads(arguments)
        except ValueError as exc:
            raise ToolArgumentsError(f"arguments are not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ToolArgumentsError(
                f"arguments must be a JSON object, not {type(value).__name__}")
        try:
            return self._arguments.validate_python(value)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc']))}: {error['msg']}" if error["loc"]
                else error["msg"]
                for error in exc.errors())
            raise ToolArgumentsError(f"invalid arguments: {problems}") from None


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(*, name: str | None = None, description: str | None = None,
         timeout: float | None = 30.0, filler_after: float | None = None,
         filler: str = "One moment while I check.",
         asyncio: bool = False) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
         description: str | None = None, timeout: float | None = 30.0,
         filler_after: float | None = None, filler: str = "One moment while I check.",
         asyncio: bool = False) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function a tool the model may call; `@tool` or `@tool(...)`.

    A coroutine function runs on trio, or on an asyncio loop (through trio-asyncio)
    with `asyncio=True`; a plain function runs in a worker thread. The name is the
    function's, the description its docstring's text, parameter descriptions its
    docstring's (Google, ReST or NumPy sections, or `name: text` after the summary).
    `timeout` (seconds, None for none) bounds each call.
    """
    def make(fn: Callable[..., Any]) -> Tool:
        return _make_tool(fn, name=name, description=description, timeout=timeout,
                          filler_after=filler_after, filler=filler, use_asyncio=asyncio)

    return make if fn is None else make(fn)


def _make_tool(fn: Callable[..., Any], *, name: str | None, description: str | None,
               timeout: float | None, filler_after: float | None, filler: str,
               use_asyncio: bool) -> Tool:
    if not callable(fn):
        raise TypeError(f"a tool must be a function, not {type(fn).__name__}")
    is_coroutine = inspect.iscoroutinefunction(fn)
    if use_asyncio and not is_coroutine:
        raise TypeError(f"asyncio=True needs an async function; {fn!r} is not one")
    kind: Kind = ("asyncio" if use_asyncio else "trio") if is_coroutine else "thread"
    name = name if name is not None else getattr(fn, "__name__", None)
    if name is None or not _NAME.fullmatch(name):
        raise ValueError(f"a tool's name is 1 to 64 letters, digits, '_' or '-'; "
                         f"got {name!r} (pass name=...)")
    for what, seconds in (("timeout", timeout), ("filler_after", filler_after)):
        if seconds is not None and not seconds > 0:
            raise ValueError(f"{what} must be positive or None, not {seconds!r}")

    params = _parameters(fn)
    context_params = tuple(p.name for p in params if p.annotation is CallContext)
    model_params = [p for p in params if p.annotation is not CallContext]
    text, param_docs = _describe(inspect.getdoc(fn) or "", [p.name for p in model_params])
    arguments = _arguments_type(name, model_params, param_docs)
    return Tool(name=name, description=text if description is None else description,
                parameters=_schema(arguments), fn=fn, kind=kind, timeout=timeout,
                filler_after=filler_after, filler=filler, context_params=context_params,
                arguments=arguments)


def _parameters(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    """The function's parameters, string annotations resolved; all of them must be
    passable by keyword (the model's arguments are a JSON object)."""
    try:
        signature = inspect.signature(fn, eval_str=True)
    except NameError as exc:
        raise TypeError(f"cannot resolve the annotations of {fn!r}: {exc}") from exc
    params = list(signature.parameters.values())
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise TypeError(f"tool parameters are passed by name: {fn!r} has {p.kind.description}"
                            f" parameter {p.name!r}")
    return params


def _arguments_type(name: str, params: list[inspect.Parameter],
                    docs: Mapping[str, str]) -> pydantic.TypeAdapter[dict[str, Any]]:
    """A TypedDict of the parameters (any name may be a key, unlike model fields),
    with extra keys forbidden: its JSON Schema is what the model sees, and its
    validator checks what the model sends. A parameter with a default is optional."""
    fields: dict[str, Any] = {}
    for p in params:
        annotation = Any if p.annotation is p.empty else p.annotation
        if p.default is p.empty:
            fields[p.name] = Annotated[annotation, pydantic.Field(description=docs.get(p.name))]
        else:
            fields[p.name] = NotRequired[Annotated[
                annotation, pydantic.Field(default=p.default, description=docs.get(p.name))]]
    # the functional form, which mypy cannot check with a name known only at run time
    make_typeddict: Any = TypedDict
    arguments = pydantic.with_config(pydantic.ConfigDict(extra="forbid"))(
        make_typeddict(name, fields))
    return pydantic.TypeAdapter(arguments)


class _ToolSchema(GenerateJsonSchema):
    """pydantic's JSON Schema without the titles it derives from names (noise to the
    model, which already has the names)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def generate(self, schema: CoreSchema, mode: JsonSchemaMode = "validation"
                 ) -> JsonSchemaValue:
        generated = super().generate(schema, mode)
        generated.pop("title", None)
        return generated


def _schema(arguments: pydantic.TypeAdapter[dict[str, Any]]) -> dict[str, Any]:
    return arguments.json_schema(schema_generator=_ToolSchema)


def _describe(doc: str, names: list[str]) -> tuple[str, dict[str, str]]:
    """The docstring's text without its parameter parts, and each parameter's
    description. Sections (Google `Args:`, ReST `:param x:`, NumPy `Parameters`) are
    read by docstring_parser; the `Returns` text stays in the description. In the
    remaining text `name: text` (at a line's start or after a sentence, `name` a
    parameter's) describes a parameter, up to the next one or a blank line."""
    parsed = docstring_parser.parse(doc)
    parts = [(parsed.description or "").strip()]  # the summary and the rest, as written
    if parsed.returns is not None and parsed.returns.description:
        parts.append(f"Returns: {parsed.returns.description}")
    text = "\n\n".join(part for part in parts if part)
    text, inline = _inline_params(text, names)
    from_sections = {p.arg_name: p.description for p in parsed.params if p.description}
    return text, {**inline, **from_sections}


def _inline_params(text: str, names: list[str]) -> tuple[str, dict[str, str]]:
    if not names:
        return text, {}
    mark = re.compile(rf"(?:^|(?<=[.!?;])[ \t]+)[ \t]*({'|'.join(map(re.escape, names))})"
                      r"[ \t]*:[ \t]+", re.MULTILINE)
    kept: list[str] = []
    found: dict[str, str] = {}
    for paragraph in re.split(r"\n[ \t]*\n", text):
        marks = list(mark.finditer(paragraph))
        head = paragraph[:marks[0].start()] if marks else paragraph
        if head.strip():
            kept.append(head.rstrip())
        for i, this in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(paragraph)
            found[this[1]] = " ".join(paragraph[this.end():end].split())
    return "\n\n".join(kept), found


def as_tools(entries: Iterable[Tool | Mapping[str, Any] | Callable[..., Any]]
             ) -> tuple[Tool | dict[str, Any], ...]:
    """An agent's tools: a `Tool` as is, a function made one with `tool`, a mapping
    (a raw tool definition, e.g. a hosted MCP server's) copied as it is. Two tools
    may not have one name."""
    tools: list[Tool | dict[str, Any]] = []
    seen: set[str] = set()
    for entry in entries:
        if isinstance(entry, Tool):
            made: Tool | dict[str, Any] = entry
        elif isinstance(entry, Mapping):
            made = dict(entry)
        elif callable(entry):
            made = tool(entry)
        else:
            raise TypeError(f"a tool is a function, a Tool or a mapping, not {entry!r}")
        name = made.name if isinstance(made, Tool) else made.get("name")
        if isinstance(name, str):
            if name in seen:
                raise ValueError(f"two tools are named {name!r}")
            seen.add(name)
        tools.append(made)
    return tuple(tools)
