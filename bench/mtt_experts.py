"""Train (or reuse) the expert trajectories of a dataset with a named expert preset and report
seconds per expert epoch beside the machine's convolution throughput measured in the same run.

    flock /tmp/datadistill-bench.lock python bench/mtt_experts.py --dataset fashion-mnist --preset cpu
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

from mtt_common import conv_throughput, machine, write

from datadistill.data import load_dataset
from datadistill.experts import EXPERT_PRESETS, ExpertConfig, expert_dir, load_experts
from datadistill.runtime import tune_allocator


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--preset", default="cpu", choices=sorted(EXPERT_PRESETS))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--time-batches", type=int, default=None,
                    help="only time this many expert batches (train_model on the first "
                         "N x batch_train images, one epoch) and scale to a full epoch")
    args = ap.parse_args()
    alloc = tune_allocator()
    real = load_dataset(args.dataset)
    cfg = ExpertConfig(**EXPERT_PRESETS[args.preset])
    if args.time_batches:
        return time_batches(real, cfg, args, alloc)
    out = f"mtt_experts_{args.dataset}_{args.preset}.json"
    rec = {"command": f"flock /tmp/datadistill-bench.lock python bench/mtt_experts.py "
                      f"--dataset {args.dataset} --preset {args.preset}",
           "machine": machine(), "allocator": alloc, "settings": dataclasses.asdict(cfg),
           "cache": str(expert_dir(real, cfg)),
           "conv_gflops_fp32_before": conv_throughput("fp32"),
           "conv_gflops_bf16_before": conv_throughput("bf16"), "epochs": []}
    write(out, rec)
    last = [time.perf_counter()]

    def on_epoch(ev):
        now = time.perf_counter()
        rec["epochs"].append({**ev, "seconds": now - last[0]})
        last[0] = now
        write(out, rec)
        print(rec["epochs"][-1], flush=True)

    t0 = time.perf_counter()
    load_experts(real, cfg, workers=args.workers, on_epoch=on_epoch)
    rec["total_s"] = time.perf_counter() - t0
    secs = [e["seconds"] for e in rec["epochs"] if "epoch" in e]
    if secs:
        rec["seconds_per_epoch"] = sum(secs) / len(secs)
    rec["conv_gflops_fp32_after"] = conv_throughput("fp32")
    write(out, rec)
    print(rec.get("seconds_per_epoch"), rec["total_s"])


def time_batches(real, cfg, args, alloc):
    from datadistill.augment import DSA
    from datadistill.models import create_model
    from datadistill.runtime import make_generator
    from datadistill.train import train_model

    n = args.time_batches * cfg.batch_train
    thr0 = conv_throughput("fp32")
    gen = make_generator(0)
    net = create_model(cfg.model, real.info, generator=gen)
    dsa = DSA.for_data(real.info, cfg.dsa_strategy) if cfg.dsa else None
    t0 = time.perf_counter()
    train_model(net, real.train.x[:n], real.train.y[:n], epochs=1, generator=gen,
                lr=cfg.lr_teacher, momentum=cfg.mom, weight_decay=cfg.l2,
                batch_size=cfg.batch_train, decay_at=None, dsa=dsa, precision=cfg.precision)
    dt = time.perf_counter() - t0
    rec = {"command": f"python bench/mtt_experts.py --dataset {args.dataset} --preset "
                      f"{args.preset} --time-batches {args.time_batches}",
           "machine": machine(), "allocator": alloc, "threads": torch.get_num_threads(),
           "loadavg": os.getloadavg()[0], "settings": dataclasses.asdict(cfg),
           "timed_images": n, "timed_s": dt, "train_images": len(real.train),
           "seconds_per_epoch": dt * len(real.train) / n,
           "conv_gflops_fp32_before": thr0, "conv_gflops_fp32_after": conv_throughput("fp32")}
    write(f"mtt_experts_{args.dataset}_{args.preset}_timed.json", rec)
    print(rec)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    main()
