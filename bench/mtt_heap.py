"""Where the resident memory of one MTT / TESLA iteration goes, step by step: after every
unrolled step's inner gradient, the process's RSS and high-water mark and glibc's heap
(``mallinfo2``: heap size, bytes in use, mmapped bytes). Used to tell live memory (bytes in use)
from allocator retention (heap size, RSS) on Fashion-MNIST IPC 10 (synthetic expert segment).

    BENCH_THREADS=1 python bench/mtt_heap.py tesla 40 [--params '{"release_memory": false}']
        [--default-malloc]     # glibc's own malloc instead of runtime.tune_allocator()
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import time
from pathlib import Path


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]


def snapshot() -> dict:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    mib = lambda b: round(b / 2**20)  # noqa: E731
    return {"rss": mib(int(status["VmRSS"].split()[0]) * 1024),
            "hwm": mib(int(status["VmHWM"].split()[0]) * 1024),
            "heap": mib(m.arena), "heap_in_use": mib(m.uordblks), "mmapped": mib(m.hblkhd)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("method")
    ap.add_argument("steps", type=int)
    ap.add_argument("--params", default="{}")
    ap.add_argument("--default-malloc", action="store_true")
    args = ap.parse_args()
    import torch

    from mtt_setup import make

    from datadistill.runtime import tune_allocator

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    alloc = "glibc default" if args.default_malloc else tune_allocator()
    real, d, syn = make(args.method, syn_steps=args.steps, **json.loads(args.params))
    print(json.dumps({"allocator": alloc, "params": json.loads(args.params),
                      "before_step_MiB": snapshot()}))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    inner = d.inner_grad

    def traced(*a, **k):
        out = inner(*a, **k)
        print(json.dumps({"pass": 2 if k["create_graph"] else 1, **snapshot()}), flush=True)
        return out

    d.inner_grad = traced
    t0 = time.perf_counter()
    d.step(real, syn)
    print(json.dumps({"after_step_MiB": snapshot(), "step_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
