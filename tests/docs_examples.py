"""The examples of README.md and docs/*.md as data: every fenced code block, the shell commands
in it, and every command written inline (a backticked span that starts with ``pnn``,
``python`` or ``make``). tests/test_docs.py decides how each one is run; a page test elsewhere
that runs one page's block reads it through :func:`blocks` too."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_INLINE = re.compile(r"(`+)(.+?)\1", re.S)
_COMMAND = re.compile(r"^(?:XLA_FLAGS=\S+ )?(?:\.venv/bin/)?(?:pnn|python3?|make)(?: |$)")


@dataclass(frozen=True)
class Example:
    """One example of one page: a fenced block (``lang`` its info string, "" when none) or an
    inline command (``lang == "inline"``); ``line`` is where it starts, 1-based."""

    page: str
    line: int
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    def commands(self) -> list[str]:
        """The shell commands of a bash/console block or an inline command, each on one line:
        continuation lines joined, comments and blank lines dropped; in a console block only
        the lines after a ``$`` prompt (the rest is what the command printed)."""
        if self.lang == "inline":
            return [" ".join(self.text.split())]
        text = self.text.replace("\\\n", " ")
        out = []
        for line in text.splitlines():
            line = line.strip()
            if self.lang == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not line or line.startswith("#"):
                continue
            out.append(_strip_comment(line))
        return out

    def output(self) -> str:
        """What a console block shows the command printing (the lines without a prompt)."""
        return "\n".join(line for line in self.text.splitlines() if not line.startswith("$ "))


def _strip_comment(line: str) -> str:
    """``cmd --a 'x # y'  # note`` -> ``cmd --a 'x # y'``: a ``#`` that starts a word outside
    quotes starts a comment, as in a shell."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=False)
    lex.whitespace_split = True
    lex.commenters = "#"
    words = list(lex)
    return shlex.join(words) if words else ""


def read(page: str) -> str:
    return (ROOT / page).read_text(encoding="utf-8")


def blocks(page: str, lang: str | None = None) -> list[Example]:
    """Every fenced block of ``page`` (a path relative to the repository root), in order;
    only those whose info string is ``lang`` when given."""
    text = read(page)
    found = [Example(page, text[:m.start()].count("\n") + 1, m.group(1), m.group(2))
             for m in _FENCE.finditer(text)]
    return [b for b in found if lang is None or b.lang == lang]


def inline_commands(page: str) -> list[Example]:
    """Every backticked span of ``page`` outside fenced blocks that starts a command
    (``pnn …``, ``.venv/bin/pnn …``, ``python …``, ``make …``), whitespace folded to one
    space (a span may wrap across lines)."""
    text = read(page)
    blanked = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    found = []
    for m in _INLINE.finditer(blanked):
        span = " ".join(m.group(2).split())
        if _COMMAND.match(span):
            found.append(Example(page, blanked[:m.start()].count("\n") + 1, "inline", span))
    return found


def examples() -> list[Example]:
    """Every example of every page: the blocks, then the inline commands, page by page."""
    return [e for page in PAGES for e in (*blocks(page), *inline_commands(page))]
