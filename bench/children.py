"""Fresh child processes for the benchmarks, started in milliseconds instead of seconds.

A benchmark measures peak memory, or repeats a timing, in a fresh process: one side's allocations cannot hide the
other's, and each process gets its own luck (memory layout, allocator state). Starting `python` anew and importing
torch takes about 3 s on the 2-core CPU machine, and about 9 s with transformers: more than a small measurement.

So the children are forked from a server process (multiprocessing's "forkserver" start method) that imported
torch and transformers once and has built nothing. Each child starts with the libraries loaded and nothing else:
no model, no tensor, no thread pool. The server never touches CUDA, so a child may use the GPU.

    results = one_after_another(fn, [(a1, b1), (a2, b2)])   # timings: never two children at once
    peaks = all_at_once(fn, [(a1, b1), (a2, b2)])           # memory: each child measures only itself

fn must be a module-level function (children find it by name); its arguments and result must pickle. An exception
in a child is raised again here, with the child's traceback.
"""
from __future__ import annotations

import multiprocessing

from tqdm import tqdm

PRELOAD = ["torch", "transformers.models.gpt2.modeling_gpt2"]  # imported once, by the server


def fresh_process_pool(processes: int):
    """A pool of `processes` workers, each doing one call and then replaced by a newly forked one."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # takes effect when the server starts (once per process)
    return context.Pool(processes, maxtasksperchild=1)


def one_after_another(fn, calls: list[tuple], desc: str | None = None) -> list:
    """[fn(*args) for args in calls], each call in its own fresh child, one child at a time."""
    with fresh_process_pool(1) as pool:
        return [pool.apply(fn, args) for args in tqdm(calls, desc=desc, leave=False, disable=desc is None)]


def all_at_once(fn, calls: list[tuple]) -> list:
    """[fn(*args) for args in calls], each call in its own fresh child, all children at the same time."""
    with fresh_process_pool(len(calls)) as pool:
        return pool.starmap(fn, calls, chunksize=1)
