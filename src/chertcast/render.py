"""Templates: Jinja's immutable sandbox, strict about undefined names, compiled once.

Column headers become variable names by ``variable_name``: lower case, every run of
characters other than (Unicode) letters and digits becomes ``_``, leading/trailing ``_`` dropped,
and a name that would start with a digit gets a ``col_`` prefix: "First Name" →
``first_name``, "E-mail" → ``e_mail``, "2nd Line" → ``col_2nd_line``.

An empty cell is *absent* from the context, so ``{{ first_name }}`` on an empty cell is an
error for that row (never "None", never "Hi ,"), while ``{{ first_name | default("there") }}``
gives the fallback.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_NON_WORD = re.compile(r"[\W_]+")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")
_PYTHON_REPR = re.compile(
    r"<(?:[\w.]+ )*(?:function|method|built-in|class|module|object|generator|TemplateReference|LoopContext"
    r"|Macro|Namespace)\b[^>]*>"
)


def variable_name(header: str) -> str:
    name = _NON_WORD.sub("_", header.casefold()).strip("_")
    if not name:
        return ""
    return f"col_{name}" if name[0].isdigit() else name


def bubbles(body: str) -> list[str]:
    """How iMessage shows the text: blank lines split it into separate bubbles."""
    return [part.strip() for part in _BLANK_LINES.split(body) if part.strip()]


@dataclass(frozen=True, slots=True)
class Rendered:
    body: str | None
    error: str | None = None  # an issue code
    reason: str = ""
    variable: str | None = None


class EmptyCell(jinja2.StrictUndefined):
    """An empty cell: an error wherever it would be shown or computed with, but false in a
    test, so ``{% if vip %}`` on an empty cell simply takes the other branch."""

    __slots__ = ()

    def __bool__(self) -> bool:  # type: ignore[override]  # StrictUndefined raises here
        return False


class MessageTemplate:
    """One compiled template and the variables it needs.

    Every free name of the template is a column (or the campaign stops), so Jinja's globals
    (``range``, ``dict``, ``lipsum``, ``cycler``, ``joiner``, ``namespace``) are removed for the
    names the template uses: a column ``Range`` with an empty cell is an empty cell, never
    ``<function safe_range at 0x…>``. The ``random`` filter is seeded per recipient (see
    ``render``), so preview, send and resume pick the same variant.
    """

    def __init__(self, source: str, origin: str, folder: Path | None = None) -> None:
        self.origin = origin
        self._env = ImmutableSandboxedEnvironment(
            undefined=EmptyCell,
            autoescape=False,
            keep_trailing_newline=False,
            loader=jinja2.FileSystemLoader(folder, encoding="utf-8-sig") if folder is not None else None,
            auto_reload=False,
        )
        self._rng = random.Random(0)
        seeded = self._seeded_random
        # pass_context: a filter on a constant list would otherwise be folded at compile time
        self._env.filters["random"] = jinja2.pass_context(lambda _context, seq: seeded(seq))
        defaults = dict(self._env.globals)
        self._env.globals.clear()  # so that a name like `range` counts as a free variable
        try:
            parsed = self._env.parse(source)
            included: set[str] = set()
            trees = self._with_included(parsed, folder, included)
            self.variables = frozenset().union(*(meta.find_undeclared_variables(tree) for tree in trees))
            self._env.globals.update(defaults)
            self._template = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            where = f"{exc.name}, " if exc.name else ""
            raise TemplateProblem(f"{origin}, {where}line {exc.lineno}: template syntax error: {exc.message}") from None
        self.included = frozenset(included)  # the files it includes or imports, by name in its folder
        self.names = frozenset(node.name for tree in trees for node in tree.find_all(nodes.Name))
        calls = (node.node for tree in trees for node in tree.find_all(nodes.Call))
        self.called = frozenset(node.name for node in calls if isinstance(node, nodes.Name))
        self.uses_random = any(node.name == "random" for tree in trees for node in tree.find_all(nodes.Filter))
        conditions: list[nodes.Node] = [node.test for tree in trees for node in tree.find_all(nodes.If)]
        conditions += [node.test for tree in trees for node in tree.find_all(nodes.CondExpr)]
        self.tested = frozenset(name.name for test in conditions for name in test.find_all(nodes.Name))

    def _with_included(self, parsed: nodes.Template, folder: Path | None, seen: set[str]) -> list[nodes.Template]:
        """This template and every file it includes or imports, parsed once at compile time,
        so that a missing file stops the campaign once instead of failing every row."""
        trees = [parsed]
        for name in meta.find_referenced_templates(parsed):
            if name is None:
                raise TemplateProblem(
                    f"{self.origin}: an include or import whose file name is computed per row; name the file"
                )
            if name in seen:
                continue
            seen.add(name)
            if self._env.loader is None or folder is None:
                raise TemplateProblem(f"{self.origin}: includes {name!r}, but an inline body cannot include files")
            try:
                included, _, _ = self._env.loader.get_source(self._env, name)
            except jinja2.TemplateNotFound:
                raise TemplateProblem(
                    f"{self.origin}: includes {name!r}, which is not a file in {folder} (the template's folder)"
                ) from None
            trees += self._with_included(self._env.parse(included, name), folder, seen)
        return trees

    def _seeded_random(self, seq: Sequence[Any]) -> Any:
        """Jinja's ``random`` filter, drawn from the recipient's own generator."""
        try:
            return self._rng.choice(seq)
        except IndexError:
            return jinja2.StrictUndefined(hint="random of an empty sequence")

    def unknown_variables(self, known: set[str]) -> list[str]:
        """The template's free names that are not columns. Binds the columns: a column wins
        over a Jinja global of the same name, and a global that is not a column stays one."""
        for name in self.variables & known:
            self._env.globals.pop(name, None)
        if "self" in known and "self" in self.names:
            raise TemplateProblem(
                f"{self.origin}: `self` is Jinja's own name for the template, so a column called Self "
                "cannot be used in it; rename the column's header"
            )
        if "lipsum" in self.variables - known:
            raise TemplateProblem(
                f"{self.origin}: lipsum() writes different random text on every run, so a resume "
                "would see every message as changed; use a list with | random (seeded per recipient)"
            )
        # A global that is not a column counts as one only when called (`range(3)`); printed bare
        # (`{{ range }}`) it is a column the sheet does not have, not a function to print.
        self.variables = frozenset(
            name for name in self.variables if name in known or name not in self._env.globals or name not in self.called
        )
        return sorted(self.variables - known)

    def render(self, context: dict[str, str], seed: str = "") -> Rendered:
        """Render one row; ``seed`` (the recipient's idempotency key) fixes ``| random``."""
        if self.uses_random:
            self._rng.seed(seed, version=2)
        try:
            text = self._template.render(context)
        except jinja2.UndefinedError as exc:
            match = _UNDEFINED_NAME.search(str(exc))
            name = match.group(1) if match else None
            if name in self.tested:
                reason = (
                    f"the template compares {name} but this row's cell is empty; fill it, or test for it "
                    "first: {% if " + f"{name} is defined and {name} == ..." + " %}"
                )
            else:
                reason = (
                    f"the template uses {{{{ {name} }}}} but this row's cell is empty; "
                    "fill it or give a default, e.g. {{ " + f'{name} | default("there", true)' + " }}"
                )
            return Rendered(None, "empty_variable", reason if name else str(exc), name)
        except SecurityError as exc:
            raise TemplateProblem(f"{self.origin}: the template tried something unsafe: {exc}") from None
        except Exception as exc:  # a filter raising on this row's data, e.g. int("abc")
            return Rendered(None, "render_failed", f"the template failed on this row: {exc}")
        if "<" in text:
            shown = _PYTHON_REPR.search(text)
            if shown:
                return Rendered(
                    None,
                    "render_failed",
                    f"the template printed a Python object ({shown.group(0)[:40]}…), not text; "
                    "check for a missing () or a name that is not a column",
                )
        return Rendered(normalise_body(text))


def normalise_body(text: str) -> str:
    """Line endings to \\n, trailing spaces off each line, no leading/trailing blank lines."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


class TemplateProblem(Exception):
    """Raised while compiling or when the sandbox refuses; preflight turns it into a ConfigError."""
