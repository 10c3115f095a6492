"""Artifact globs: which files of a working directory a task keeps.

A glob is a relative POSIX path pattern. `*` and `?` match within one path segment, `[...]`
a character class, and a whole segment `**` any number of directories (none included), so
`**/*.png` matches `a.png` and `shots/desktop/a.png`. As in shell and .gitignore globbing, a
wildcard never matches a leading dot: `**/*.json` does not keep `.docker/config.json`, which a
tool writes after a login with a secret; only a glob naming the dot (`.report/*.json`) does.
Matching is done on the relative path
of each regular file found by walking the directory without following links: a pattern can
never reach outside the working directory, because nothing outside it is ever listed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MAX_GLOBS = 50
MAX_GLOB_LENGTH = 300


def glob_error(pattern: object) -> str | None:
    """Why `pattern` is not an acceptable artifact glob, or None when it is."""
    if not isinstance(pattern, str) or not pattern.strip():
        return "must be a non-empty string such as 'report.html' or 'shots/**/*.png'"
    if len(pattern) > MAX_GLOB_LENGTH:
        return f"is longer than {MAX_GLOB_LENGTH} characters"
    if pattern.startswith("/") or re.match(r"^[A-Za-z]:", pattern):
        return "must be relative to the working directory (no leading '/')"
    if "\\" in pattern or "\x00" in pattern:
        return "must use '/' between directories and no backslashes"
    if any(part in ("..", ".") for part in pattern.split("/")):
        return "cannot contain '.' or '..' segments"
    if "" in pattern.split("/"):
        return "cannot contain an empty segment ('//' or a trailing '/')"
    try:
        re.compile(_translate(pattern))
    except re.error:
        return "is not a valid pattern (check the [...] classes)"
    return None


def globs_errors(globs: object) -> list[str]:
    """Messages for a task's `artifact_globs` value, each naming the offending entry."""
    if not isinstance(globs, list):
        return ['must be a list of glob strings, e.g. ["report.html", "shots/**/*.png"]']
    if len(globs) > MAX_GLOBS:
        return [f"has {len(globs)} globs; at most {MAX_GLOBS}"]
    errors = []
    for index, pattern in enumerate(globs):
        problem = glob_error(pattern)
        if problem:
            errors.append(f"[{index}] {problem}")
    return errors


def _segment(segment: str) -> str:
    # A segment starting with a wildcard does not match a name starting with a dot.
    out, i = (["(?!\\.)"] if segment[:1] in ("*", "?", "[") else []), 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = segment.find("]", i + 2 if segment[i + 1:i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = segment[i + 1:end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                # A class never matches the separator, whatever it lists.
                out.append(f"(?![/])[{body.replace(chr(92), chr(92) * 2)}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _translate(pattern: str) -> str:
    parts = pattern.split("/")
    out = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            # Any depth, through names that do not start with a dot.
            out.append("[^/.][^/]*(?:/[^/.][^/]*)*" if last else "(?:[^/.][^/]*/)*")
        else:
            out.append(_segment(part) + ("" if last else "/"))
    return "".join(out)


def glob_matcher(globs: list[str]) -> Callable[[str], bool]:
    """A predicate on relative POSIX paths: does any of the globs match the whole path?"""
    if not globs:
        return lambda path: False
    regex = re.compile("|".join(f"(?:{_translate(g)})" for g in globs), re.DOTALL)
    return lambda path: regex.fullmatch(path) is not None
