"""Bounded, lazy submission of work to Ray (or anything with handles and a wait): the next item is
made (e.g. a chunk of images read and packed) only when a slot frees, so no more than
``per_worker`` × workers items are ever in flight, whatever the size of the image set."""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
W = TypeVar("W")
H = TypeVar("H", bound=Hashable)

PER_WORKER = 2  # one being worked on, one on its way: the worker never waits for its next chunk


def bounded_map(items: Iterable[T], workers: Sequence[W], submit: Callable[[W, T], H], wait: Callable[[list[H]], H],
                per_worker: int = PER_WORKER) -> Iterator[tuple[int, H]]:
    """Submit ``items`` lazily to ``workers``, at most ``per_worker`` outstanding on each (the least
    loaded worker gets the next one); yield ``(item index, finished handle)`` in completion order.
    ``submit(worker, item)`` starts one and returns its handle; ``wait(handles)`` blocks until one of
    them has finished and returns it."""
    if per_worker < 1:
        raise ValueError(f"per_worker must be ≥ 1, got {per_worker}")
    if not workers:
        raise ValueError("bounded_map needs at least one worker")
    load = [0] * len(workers)
    pending: dict[H, tuple[int, int]] = {}  # handle → (item index, worker index)
    todo = iter(enumerate(items))
    more = True
    while True:
        while more:
            w = min(range(len(workers)), key=load.__getitem__)
            if load[w] >= per_worker:
                break
            nxt = next(todo, None)
            if nxt is None:
                more = False
                break
            pending[submit(workers[w], nxt[1])] = (nxt[0], w)
            load[w] += 1
        if not pending:
            return
        done = wait(list(pending))
        index, w = pending.pop(done)
        load[w] -= 1
        yield index, done


def ray_wait_one(ray) -> Callable[[list], object]:
    """``wait`` for :func:`bounded_map` over Ray object refs."""
    return lambda refs: ray.wait(refs, num_returns=1)[0][0]
