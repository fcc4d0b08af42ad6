"""DD / LinBa: does a long unroll fit? Peak memory of one outer iteration vs unroll length, with
and without gradient checkpointing (Fashion-MNIST, IPC 1, ConvNet-128, momentum 0.9).

    python bench/dd_memory.py            # -> bench/results/dd_memory.json

Each configuration runs in its own process (peak RSS is its own).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

CONFIGS = [(10, None), (20, None), (40, None), (100, None), (100, 10), (150, 10)]


def one(unroll: int, ckpt: int | None) -> dict:
    import torch

    torch.set_num_threads(2)
    from datadistill.data import load_dataset
    from datadistill.distillers import create_distiller
    from datadistill.runtime import peak_rss_bytes, tune_allocator

    tune_allocator()
    real = load_dataset("fashion-mnist")
    base = peak_rss_bytes()
    d = create_distiller("dd", "linba", unroll=unroll, checkpoint_every=ckpt, iterations=1,
                         batch_real=256, device="cpu")
    syn = d.init_synset(real, ipc=1)
    c0, t0 = time.process_time(), time.perf_counter()
    d.distill(real, syn)
    return {"unroll": unroll, "checkpoint_every": ckpt, "cpu_s": time.process_time() - c0,
            "wall_s": time.perf_counter() - t0, "peak_rss_gib": peak_rss_bytes() / 2**30,
            "before_gib": base / 2**30}


def main() -> None:
    if len(sys.argv) == 3:
        ck = None if sys.argv[2] == "none" else int(sys.argv[2])
        print(json.dumps(one(int(sys.argv[1]), ck)))
        return
    from common import machine, save

    rec = {"machine": machine(), "command": "python bench/dd_memory.py", "runs": []}
    for unroll, ck in CONFIGS:
        out = subprocess.run([sys.executable, __file__, str(unroll), str(ck).lower()],
                             capture_output=True, text=True)
        rec["runs"].append(json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0
                           else {"unroll": unroll, "checkpoint_every": ck,
                                 "error": f"rc {out.returncode}: {out.stderr[-500:]}"})
        save("dd_memory", rec)


if __name__ == "__main__":
    main()
