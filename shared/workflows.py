"""Task graphs (SPEC section 11): the one check of `depends_on` and batch `ref`s, for every
create path (REST single and batch, the ASGI fast path, the producer).

Here only the shape of the graph is checked (refs, cycles); whether each named id is a task of
the queue is decided by enqueue.lua, atomically with the create (a 404 that writes nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.errors import ValidationFailed
from shared.models import TASK_ID, TaskCreate


def link(creates: Sequence[TaskCreate], specs: Sequence[dict[str, Any]], *, batch: bool) -> None:
    """Resolve each create's `depends_on` into task ids, in `specs[i]["depends_on"]` (left
    out when there is none).

    An entry naming a `ref` of this call is that item's new id; any other entry must be a
    task id. Raises ValidationFailed (a 400) for a duplicate ref, an unknown ref, a cycle, or
    a ref naming the item itself or a later one (a graph is created in dependency order).

    Args:
        creates: the create bodies, in the call's order.
        specs: their prepared specs (transitions.prepare), with their new ids.
        batch: whether the call is a batch (the error locations name `tasks[i]`).
    """
    refs: dict[str, int] = {}
    for i, create in enumerate(creates):
        if create.ref is None:
            continue
        if create.ref in refs:
            raise ValidationFailed(
                f"ref {create.ref!r} names two items ({refs[create.ref]} and {i}): refs must "
                "be unique in a batch",
                [{"loc": [*_where(i, batch), "ref"], "msg": "duplicate ref"}],
            )
        refs[create.ref] = i
    edges = {
        i: [refs[name] for name in create.depends_on or () if name in refs]
        for i, create in enumerate(creates)
    }
    cycle = _cycle(edges)
    if cycle:
        names = [creates[i].ref or f"#{i}" for i in cycle]
        raise ValidationFailed(
            f"depends_on forms a cycle: {' -> '.join(names)}",
            [{"loc": [*_where(cycle[0], batch), "depends_on"], "msg": "cycle", "cycle": names}],
        )
    for i, create in enumerate(creates):
        if not create.depends_on:
            continue
        ids: dict[str, None] = {}  # in order, each once
        for j, name in enumerate(create.depends_on):
            where = [*_where(i, batch), "depends_on", j]
            if name in refs:
                if refs[name] >= i:
                    raise ValidationFailed(
                        f"depends_on names ref {name!r} of a later item: list a graph's "
                        "items in dependency order",
                        [{"loc": where, "msg": "ref of a later item"}],
                    )
                ids[specs[refs[name]]["id"]] = None
            elif TASK_ID.fullmatch(name):
                ids[name] = None
            else:
                raise ValidationFailed(
                    f"depends_on names {name!r}, which is neither a task id nor the ref of "
                    "an earlier item of this batch",
                    [{"loc": where, "msg": "unknown ref"}],
                )
        specs[i]["depends_on"] = list(ids)


def _where(index: int, batch: bool) -> list[str | int]:
    return ["body", "tasks", index] if batch else ["body"]


def _cycle(edges: dict[int, list[int]]) -> list[int] | None:
    """A cycle of the graph (its nodes, the first repeated at the end), or None."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for root in edges:
        if root in state:
            continue
        path: list[int] = [root]
        todo: list[list[int]] = [list(edges[root])]
        state[root] = 1
        while path:
            if not todo[-1]:
                state[path.pop()] = 2
                todo.pop()
                continue
            nxt = todo[-1].pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(list(edges[nxt]))
    return None
