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

import re
from dataclasses import dataclass

import jinja2
from jinja2 import meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_NON_WORD = re.compile(r"[\W_]+")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")


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


class MessageTemplate:
    """One compiled template and the variables it needs."""

    def __init__(self, source: str, origin: str) -> None:
        self.origin = origin
        self._env = ImmutableSandboxedEnvironment(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        try:
            parsed = self._env.parse(source)
            self._template = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateProblem(f"{origin}, line {exc.lineno}: template syntax error: {exc.message}") from None
        self.variables = frozenset(meta.find_undeclared_variables(parsed))

    def unknown_variables(self, known: set[str]) -> list[str]:
        return sorted(self.variables - known)

    def render(self, context: dict[str, str]) -> Rendered:
        try:
            text = self._template.render(context)
        except jinja2.UndefinedError as exc:
            match = _UNDEFINED_NAME.search(str(exc))
            name = match.group(1) if match else None
            reason = (
                f"the template uses {{{{ {name} }}}} but this row's cell is empty; "
                "fill it or give a default, e.g. {{ " + f'{name} | default("there", true)' + " }}"
            )
            return Rendered(None, "empty_variable", reason if name else str(exc), name)
        except SecurityError as exc:
            raise TemplateProblem(f"{self.origin}: the template tried something unsafe: {exc}") from None
        except Exception as exc:  # a filter raising on this row's data, e.g. int("abc")
            return Rendered(None, "render_failed", f"the template failed on this row: {exc}")
        return Rendered(normalise_body(text))


def normalise_body(text: str) -> str:
    """Line endings to \\n, trailing spaces off each line, no leading/trailing blank lines."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


class TemplateProblem(Exception):
    """Raised while compiling or when the sandbox refuses; preflight turns it into a ConfigError."""
