"""YAML loading that keeps line numbers, and ${ENV} expansion.

Like containerlab we expand environment variables in the file text before parsing (so
`[${A:-1}, 2]` works in flow style), line by line so line numbers stay exact. We then compose the
YAML into nodes (which carry marks) and build plain Python data made of `LDict`/`LList` that
remember the line of each key and item. Errors can then say `lab.clab.yml:12: nodes.r1.kind: ...`
instead of a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from netlab.errors import TopologyError


class LDict(dict[str, Any]):
    """A mapping that remembers where it and each of its keys were written (1-based lines)."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LList(list[Any]):
    """A sequence that remembers its own line and each item's line."""

    line: int = 0
    item_lines: list[int]

    def line_of(self, index: int) -> int:
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


# ${VAR}, ${VAR:-default}, ${VAR:=default}, ${VAR-default}; "$$" escapes a literal "$".
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-=])([^}]*))?\}")


def expand_env(text: str, env: Mapping[str, str], file: str, line: int, field: str) -> str:
    """Expand ${VAR} references; an unset variable without a default is an error."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op is not None and op.startswith(":") and value == "":
            value = None  # ":-" treats empty like unset, as in the shell
        if value is None:
            if op is None:
                raise TopologyError(
                    file,
                    line,
                    field,
                    f"environment variable '{name}' is not set and has no default "
                    f"(write ${{{name}:-default}})",
                )
            return default or ""
        return value

    return _ENV_RE.sub(repl, text)


_KEY_RE = re.compile(r"^\s*(?:-\s+)?([A-Za-z0-9_.${}:-]+?)\s*:(?:\s|$)")


def expand_env_text(text: str, env: Mapping[str, str], file: str) -> str:
    """Expand ${VAR} in each line of a file (comment lines are left alone)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if "$" not in line or line.lstrip().startswith("#"):
            continue
        key = _KEY_RE.match(line)
        lines[i] = expand_env(line, env, file, i + 1, key.group(1) if key else "")
    return "\n".join(lines)


class _Loader(yaml.SafeLoader):
    """SafeLoader used only for composing and for resolving scalar tags."""


def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _build(node: yaml.Node, loader: _Loader, file: str, path: str) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = LDict()
        out.line = line
        out.key_lines = {}
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<: *anchor)
        for knode, vnode in node.value:
            key = _build(knode, loader, file, path)
            if not isinstance(key, (str, int, float, bool)):
                raise TopologyError(file, knode.start_mark.line + 1, path, "keys must be scalars")
            key = str(key)
            if key in out:
                raise TopologyError(
                    file,
                    knode.start_mark.line + 1,
                    _field(path, key),
                    f"duplicate key (first written on line {out.key_lines[key]})",
                )
            out.key_lines[key] = knode.start_mark.line + 1
            out[key] = _build(vnode, loader, file, _field(path, key))
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LList()
        seq.line = line
        seq.item_lines = []
        for i, item in enumerate(node.value):
            seq.item_lines.append(item.start_mark.line + 1)
            seq.append(_build(item, loader, file, f"{path}[{i}]"))
        return seq
    assert isinstance(node, yaml.ScalarNode)
    return loader.construct_object(node, deep=True)


def load_yaml(text: str, file: str, env: Mapping[str, str] | None = None) -> Any:
    """Parse one YAML document into LDict/LList/scalars; YAML errors become TopologyError."""
    text = expand_env_text(text, os.environ if env is None else env, file)
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise TopologyError(file, line, "", f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise TopologyError(file, None, "", f"YAML syntax error: {exc}") from None
    finally:
        loader.dispose()
    if root is None:
        return None
    try:
        return _build(root, loader, file, "")
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise TopologyError(
            file, mark.line + 1 if mark else None, "", f"YAML error: {exc.problem}"
        ) from None
