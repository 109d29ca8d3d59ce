"""Task parallelism on the same world: independent jobs spread over the processes, results to rank 0."""

from __future__ import annotations

import time

__all__ = ["map_tasks", "my_tasks"]


def my_tasks(count: int, world) -> list[int]:
    """The task numbers of this process, round-robin: rank r takes r, r + size, r + 2 size, ..."""
    return list(range(world.rank, count, world.size))


def map_tasks(fn, tasks, world, on_result=None) -> list | None:
    """``[fn(task) for task in tasks]``, task i computed on rank ``i % world.size``.

    Every process works through its own tasks; the others post each result to rank 0 as soon as
    it is ready and go on. Rank 0 receives them after its own, so each result travels once and
    no process waits while it has work. A result must pack (``world.pack``: arrays, dicts, lists,
    numbers, strings; nothing is pickled).

    Args:
        fn: the work, called with one task.
        tasks: the tasks, the same list on every process.
        world: a ``World``.
        on_result: called on rank 0 as ``on_result(i, result, rank)`` when result i is there.

    Returns:
        On rank 0 the results in task order; None on the other ranks.
    """
    tasks = list(tasks)
    results, longest = {}, 0.0
    for i in my_tasks(len(tasks), world):
        t0 = time.monotonic()
        result = fn(tasks[i])
        longest = max(longest, time.monotonic() - t0)
        if world.rank == 0:
            results[i] = result
            if on_result is not None:
                on_result(i, result, 0)
        else:
            world.post_result((i, result), f"result of task {i}")
    # rank 0 finishes its own tasks last or nearly (it has the most): the others wait for it to
    # take their results for at most the world's timeout beyond two of the longest tasks
    timeout = None if world.timeout is None else world.timeout + 2 * longest
    if world.rank != 0:
        world.finish_results(timeout)
        return None
    while len(results) < len(tasks):
        rank, (i, result) = world.receive_result(f"the results of tasks {sorted(set(range(len(tasks))) - set(results))}",
                                                 timeout)
        results[i] = result
        if on_result is not None:
            on_result(i, result, rank)
    return [results[i] for i in range(len(tasks))]
