"""Learning rate for the width-1024 ConvNet evaluation, chosen on the validation split.

Trains ``convnet_w1024`` (standard parameterization) on the FRePO IPC 1 summary made by
``bench/kip_accuracy.py`` (``bench/out/meta/frepo-ipc1``) with the common protocol except the
learning rate (SGD momentum 0.9, wd 5e-4, DSA, MSE on the learned labels, bf16, lr x0.1 at
half) and reports the training loss curve and the accuracy on the first 1,000 *validation*
images (carved from train; the test split is not touched). Also the width-128 ConvNet at the
protocol's lr 0.01 for reference.

    OMP_NUM_THREADS=1 python bench/wide_lr.py --lrs 0.01,0.003,0.00125 --epochs 40
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, save  # noqa: E402

from datadistill.augment import DSA  # noqa: E402
from datadistill.data import load_dataset  # noqa: E402
from datadistill.models import create_model  # noqa: E402
from datadistill.synsets import load_summary  # noqa: E402
from datadistill.train import accuracy, train_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lrs", default="0.01,0.003,0.00125")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--val", type=int, default=1000)
    a = ap.parse_args()
    torch.set_num_threads(1)
    real = load_dataset("fashion-mnist")
    syn = load_summary(Path(__file__).resolve().parent / "out" / "meta" / "frepo-ipc1" / "summary")
    x, y = syn.materialize()
    rec = {"command": "python bench/wide_lr.py " + " ".join(sys.argv[1:]), "machine": machine(),
           "summary": "frepo-ipc1 (bench/kip_accuracy.py)", "epochs": a.epochs,
           "precision": a.precision, "val_images": a.val, "rows": []}
    runs = [(128, 0.01)] + [(1024, float(lr)) for lr in a.lrs.split(",")]
    for width, lr in runs:
        net = create_model(f"convnet_w{width}", real.info,
                           generator=torch.Generator().manual_seed(0))
        losses = []
        c0 = time.process_time()
        train_model(net, x.detach(), y.detach(), epochs=a.epochs, lr=lr,
                    generator=torch.Generator().manual_seed(0), label_format=syn.label_format,
                    precision=a.precision, dsa=DSA("color_crop_cutout_flip_scale_rotate"),
                    on_epoch=lambda ep, loss: losses.append(loss))
        row = {"width": width, "lr": lr, "train_cpu_s": time.process_time() - c0,
               "loss_curve": losses, "max_loss": max(losses), "final_loss": losses[-1],
               "val_acc": 100 * accuracy(net, real.val.x[:a.val], real.val.y[:a.val],
                                         batch_size=250, precision=a.precision)}
        rec["rows"].append(row)
        print({k: v for k, v in row.items() if k != "loss_curve"}, flush=True)
        save("wide_lr", rec)


if __name__ == "__main__":
    main()
