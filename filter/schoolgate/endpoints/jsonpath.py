"""The small JSON path language of catalog routes (`$.media[*].data`, `$..image`), depth-bounded."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_JSON_TOKEN = re.compile(
    r"""\.\.(?P<deep>[A-Za-z0-9_$@-]+|\*)"""
    r"""|\.(?P<name>[A-Za-z0-9_$@-]+|\*)"""
    r"""|\[(?P<index>-?\d+|\*)\]"""
    r"""|\[['"](?P<quoted>[^'"\]]+)['"]\]"""
)


@dataclass(frozen=True)
class JsonPath:
    """A small JSONPath subset: `$`, `.name`, `..name` (any depth), `[n]`, `[*]`, `['a b']`."""

    text: str
    steps: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> JsonPath:
        """Parse `text` or raise ValueError."""
        if not isinstance(text, str) or not text.startswith("$"):
            raise ValueError(f"{text!r}: a JSON path must start with '$'")
        steps: list[tuple[str, str]] = []
        position = 1
        while position < len(text):
            match = _JSON_TOKEN.match(text, position)
            if match is None:
                raise ValueError(f"{text!r}: cannot parse from position {position}")
            if match["deep"] is not None:
                steps.append(("deep", match["deep"]))
            elif match["name"] is not None:
                steps.append(("child", match["name"]))
            elif match["index"] is not None:
                steps.append(("index", match["index"]))
            else:
                steps.append(("child", match["quoted"]))
            position = match.end()
        return cls(text, tuple(steps))

    def find(self, document: object, max_depth: int = 64) -> list[object]:
        """Every value the path selects in a parsed JSON document (depth-bounded)."""
        current: list[object] = [document]
        for kind, arg in self.steps:
            following: list[object] = []
            for node in current:
                following.extend(_step(node, kind, arg, max_depth))
            current = following
        return current


def _children(node: object) -> Iterator[object]:
    if isinstance(node, dict):
        yield from node.values()
    elif isinstance(node, list):
        yield from node


def _step(node: object, kind: str, arg: str, max_depth: int) -> Iterator[object]:
    if kind == "child":
        if arg == "*":
            yield from _children(node)
        elif isinstance(node, dict) and arg in node:
            yield node[arg]
    elif kind == "index":
        if isinstance(node, list):
            if arg == "*":
                yield from node
            elif -len(node) <= int(arg) < len(node):
                yield node[int(arg)]
        elif isinstance(node, dict) and arg == "*":
            yield from node.values()
    else:  # "deep": the node itself and every descendant, breadth bounded by max_depth
        stack: list[tuple[object, int]] = [(node, 0)]
        while stack:
            item, depth = stack.pop()
            if isinstance(item, dict):
                if arg == "*":
                    yield from item.values()
                elif arg in item:
                    yield item[arg]
            if depth < max_depth:
                stack.extend((child, depth + 1) for child in _children(item))
