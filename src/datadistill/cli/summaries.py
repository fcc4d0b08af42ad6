"""The commands on one saved summary: ``show`` (describe it, export a picture / .npz / .csv)
and ``compact`` (a sparse, quantized copy of a recommender or graph summary, or an IT-GAN
summary's generated images, ``compact.py``)."""
from __future__ import annotations

import json
from pathlib import Path

from ._common import load_data, summary_path


def cmd_show(args) -> int:
    from ..report import image_grid
    from ..synsets import load_summary

    syn = load_summary(summary_path(args.summary))
    m = syn.meta
    print(f"{syn.kind} summary of {syn.info.name}: {syn.num_examples} examples "
          f"({syn.ipc:g} per class), labels {syn.label_format}, {syn.stored_bytes()} stored bytes"
          f" ({syn.storage.name})")
    print(f"method: {m.get('method')}  iterations: {m.get('iterations')}  seed: {m.get('seed')}  "
          f"wall time: {m.get('wall_time_s')} s  library {m.get('library_version')}")
    if syn.lr is not None:
        print(f"learned step size: {float(syn.lr):.6g}")
    if m.get("params"):
        print("params: " + ", ".join(f"{k}={v}" for k, v in m["params"].items()))
    if syn.info.modality == "text":  # nearest tokens / nearest real sentences
        from ..synsets.text import describe_text
        real = load_data(m.get("dataset_source") or syn.info.name, args.data_dir)
        print("\n".join(describe_text(syn, real, per_class=args.rows)))
    if syn.info.modality == "tabular":  # valid rows in the original columns and types
        from ..synsets.tabular import decode_rows, write_csv
        rows = decode_rows(syn)
        for r in rows[:args.rows * syn.info.num_classes]:
            print("  " + ", ".join(f"{k}={v}" for k, v in r.items()))
        if args.csv:
            print(f"wrote {write_csv(syn, args.csv)}")
    if args.png:
        print(f"wrote {image_grid(syn, args.png)}")
    if args.npz:
        import numpy as np
        x, y = syn.materialize()
        np.savez(args.npz, x=x.detach().cpu().numpy(), y=y.detach().cpu().numpy(),
                 mean=np.asarray(syn.info.mean), std=np.asarray(syn.info.std))
        print(f"wrote {args.npz}")
    return 0


def cmd_compact(args) -> int:
    from ..compact import bytes_breakdown, compact
    from ..synsets import load_summary

    syn = load_summary(summary_path(args.summary))
    out = compact(syn, topk=args.topk, dtype=args.dtype, threshold=args.threshold,
                  edge_dtype=args.edge_dtype)
    path = out.save(Path(args.out) / "summary")
    before, after = syn.stored_bytes(), out.stored_bytes()
    if args.json:
        print(json.dumps({"summary": str(path), "kind": out.kind, "storage": out.config(),
                          "stored_bytes_before": before, "stored_bytes": after,
                          "bytes": bytes_breakdown(out)}))
    else:
        parts = ", ".join(f"{k} {v:,}" for k, v in bytes_breakdown(out).items() if k != "total")
        print(f"summary: {path} ({out.kind}, {after:,} stored bytes, was {before:,} as "
              f"{syn.kind}: {after / max(before, 1):.3f}x)\n  {parts}")
    return 0


def add_show(sub) -> None:
    s = sub.add_parser("show", help="describe a summary; export a PNG grid or .npz")
    s.add_argument("summary")
    s.add_argument("--png", default=None)
    s.add_argument("--npz", default=None)
    s.add_argument("--csv", default=None, help="tabular summaries: write the decoded rows here")
    s.add_argument("--rows", type=int, default=3, help="text/tabular: examples shown per class")
    s.add_argument("--data-dir", default=None, help="text summaries: where the dataset is")
    s.set_defaults(func=cmd_show)


def add_compact(sub) -> None:
    cp = sub.add_parser("compact", help="store a recommender or graph summary sparsely, quantized "
                        "(an IT-GAN summary: its generated images)")
    cp.add_argument("summary", help="a run folder or summary folder")
    cp.add_argument("--out", required=True, help="folder for the compact summary (OUT/summary)")
    cp.add_argument("--topk", type=int, default=None,
                    help="recommender rows: keep each user's K largest entries (default: all non-zeros)")
    cp.add_argument("--dtype", default=None, help="values (rows) or features (graphs): float32, "
                    "float16 (default), uint8 (affine per row), binary (rows only: kept entries = "
                    "1); IT-GAN: the images' storage precision (default float32)")
    cp.add_argument("--threshold", type=float, default=None,
                    help="graphs: drop adjacency entries below this (default: the summary's own)")
    cp.add_argument("--edge-dtype", default="float16",
                    help="graphs: edge weights as float32, float16, uint8 or binary")
    cp.add_argument("--json", action="store_true", help="JSON on stdout")
    cp.set_defaults(func=cmd_compact)
