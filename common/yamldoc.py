"""YAML documents that remember the line of every field, for one-line errors
(`app.yml:12: resources.memory: ...`) instead of tracebacks.

Shared by the controller's file formats (the policy file, app specs): each parses the text with
`load`, walks the plain Python values it returns and, when a value is wrong, raises
`doc.fail(path, message)`, an error of the format's own class naming file, line and field. A path
is the tuple of keys and list indexes from the root: ("rules", 2, "proto") is `rules[2].proto`.
"""

from __future__ import annotations

from typing import Any

import yaml

from common.errors import LispmeshError

Path = tuple[str | int, ...]


class YamlDoc:
    """The file name, the error class and the line each path starts on."""

    def __init__(self, filename: str, error: type[LispmeshError]) -> None:
        self.filename = filename
        self.error = error
        self.lines: dict[Path, int] = {}

    def fail(self, path: Path, message: str) -> LispmeshError:
        line = self.line(path)
        field = dotted(path)
        return self.error(f"{self.filename}:{line}: {field + ': ' if field else ''}{message}")

    def line(self, path: Path) -> int:
        """The line of `path`, or of the nearest enclosing path that was written."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def describe(value: Any) -> str:
    """What a wrong value is, for "expected X, got Y"."""
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def load(text: str, doc: YamlDoc) -> Any:
    """One YAML document as dicts, lists and scalars, recording lines in `doc`."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise doc.error(f"{doc.filename}:{line}: YAML syntax: {problem}") from None
    except yaml.YAMLError as exc:
        raise doc.error(f"{doc.filename}:1: YAML: {exc}") from None
    if root is None:
        raise doc.error(f"{doc.filename}:1: the file is empty")
    return _walk(loader, root, (), doc)


def _walk(loader: yaml.SafeLoader, node: yaml.Node, path: Path, doc: YamlDoc) -> Any:
    doc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int) or isinstance(key, bool):
                doc.lines[(*path, "?")] = key_node.start_mark.line + 1
                raise doc.fail((*path, "?"), f"a key must be a name, not {key!r}")
            key = str(key)
            if key in out:
                doc.lines[(*path, key)] = key_node.start_mark.line + 1
                raise doc.fail((*path, key), "defined twice")
            out[key] = _walk(loader, value_node, (*path, key), doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(loader, item, (*path, i), doc) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise doc.fail(path, f"bad value: {exc}") from None


def mapping(value: Any, path: Path, doc: YamlDoc, known: tuple[str, ...]) -> dict[str, Any]:
    """`value` as a mapping whose keys are all in `known`."""
    if not isinstance(value, dict):
        raise doc.fail(path, f"expected a mapping, got {describe(value)}")
    for key in value:
        if key not in known:
            hint = ", ".join(sorted(known))
            raise doc.fail((*path, key), f"unknown field {key!r} (known: {hint})")
    return value


def string(value: Any, path: Path, doc: YamlDoc, what: str = "a string") -> str:
    """A non-empty string (a number written bare is taken as its text)."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise doc.fail(path, f"expected {what}, got {describe(value)}")
    return str(value)
