"""Lineage: which datasets and recipe a release came from, and which releases derive from it.

    dataset/literary-pd@1 ──► recipe/forge-small@1 ──► model/forge-small@1.0.0 ──► variant int4-g128
                                                                │
                                                                └──► model/forge-small-chat@1.0.0 (base_model)

:func:`lineage_graph` returns nodes and edges for the whole registry (or the part connected
to one ref); the explorer draws it, ``commonforge show`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from commonforge.errors import ForgeError
from registry.catalog import Registry
from registry.schema import Recipe, Release


@dataclass(frozen=True)
class Node:
    id: str  # a ref, or "<model ref>#<variant>" for a quantized variant
    kind: str  # dataset | recipe | model | variant
    label: str


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)  # (from, to): "to" was made from "from"

    def add(self, node: Node) -> None:
        self.nodes.setdefault(node.id, node)

    def upstream(self, node_id: str) -> set[str]:
        return self._walk(node_id, reverse=True)

    def downstream(self, node_id: str) -> set[str]:
        return self._walk(node_id, reverse=False)

    def _walk(self, start: str, *, reverse: bool) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            current = todo.pop()
            for a, b in self.edges:
                src, dst = (b, a) if reverse else (a, b)
                if src == current and dst not in seen:
                    seen.add(dst)
                    todo.append(dst)
        return seen

    def restricted_to(self, node_id: str) -> Graph:
        """The part of the graph connected to ``node_id`` (its ancestors and descendants)."""
        keep = {node_id} | self.upstream(node_id) | self.downstream(node_id)
        g = Graph({k: v for k, v in self.nodes.items() if k in keep})
        g.edges = {(a, b) for a, b in self.edges if a in keep and b in keep}
        return g


def lineage_graph(reg: Registry, around: str | None = None) -> Graph:
    """The lineage of every entry in the registry; with ``around``, only what connects to it."""
    g = Graph()
    for entry in reg.iter_entries():
        g.add(Node(entry.ref, entry.kind, entry.ref))
        if isinstance(entry, Recipe):
            for d in entry.datasets:
                g.add(Node(d, "dataset", d))
                g.edges.add((d, entry.ref))
        elif isinstance(entry, Release):
            m = entry.manifest
            if m.recipe is not None:
                g.add(Node(m.recipe.ref, "recipe", m.recipe.ref))
                g.edges.add((m.recipe.ref, entry.ref))
            if m.conversion is not None:
                g.add(Node(m.conversion.ref, "conversion", m.conversion.ref))
                g.edges.add((m.conversion.ref, entry.ref))
            if m.base_model:
                g.add(Node(m.base_model, "model", m.base_model))
                g.edges.add((m.base_model, entry.ref))
            for v in m.variants():
                vid = f"{entry.ref}#{v}"
                g.add(Node(vid, "variant", v))
                g.edges.add((entry.ref, vid))
    if around is not None:
        if around not in g.nodes:
            raise ForgeError(f"{around} is not in the lineage graph")
        g = g.restricted_to(around)
    return g


def derived_releases(reg: Registry, ref: str) -> list[str]:
    """Releases whose lineage includes ``ref`` (a dataset, recipe or model ref)."""
    g = lineage_graph(reg)
    return sorted(n for n in g.downstream(ref) if g.nodes[n].kind == "model")
