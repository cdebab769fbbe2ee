"""LKD's folder loader against torchvision ImageFolder + DataLoader on one JPEG folder.

Same work on both sides: decode, RandomResizedCrop 224 (bicubic, scale 0.08-1, ratio 3/4-4/3),
horizontal flip, normalize to float32, batches of 32, the same worker count. Rounds alternate
the order; each round is one epoch per loader. Prints images/s per round, the median and range,
and the LKD/torchvision ratio per round.

    python benches/folder_loader_vs_torchvision.py [--images 240] [--workers 2] [--rounds 5]

(`make loader-bench` builds the LKD side and runs this with the project's venv.) The folder is
generated once under $LKD_CACHE/bench-photos: photo-sized JPEGs (640-2400 px on the long side,
quality 90) of smooth shapes and sensor-like noise.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def make_photos(root: Path, n: int) -> None:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    done = root / f".done-{n}"
    if done.exists():
        return
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = root / "train" / f"class_{i % 4}"
        cls.mkdir(parents=True, exist_ok=True)
        long = int(rng.integers(640, 2401))
        w, h = (long, long * 3 // 4) if i % 3 else (long * 3 // 4, long)
        img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
        d = ImageDraw.Draw(img)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 10, h // 2))
            d.ellipse([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img = img.filter(ImageFilter.GaussianBlur(long / 200))
        noise = rng.normal(0, 6, (h, w, 3))
        arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(cls / f"{i:04d}.jpg", quality=90)
    done.touch()


def torchvision_epoch(root: Path, workers: int, batch: int, epoch: int) -> tuple[int, float]:
    import torch
    from torchvision import datasets, transforms
    from torchvision.transforms import InterpolationMode

    t0 = time.perf_counter()
    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(224, interpolation=InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    ds = datasets.ImageFolder(str(root / "train"), transform=tf)
    torch.manual_seed(epoch)
    dl = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        worker_init_fn=lambda _: torch.set_num_threads(1),
    )
    n = sum(len(y) for _, y in dl)
    return n, time.perf_counter() - t0


def lkd_epoch(exe: str, root: Path, workers: int, batch: int, epoch: int) -> tuple[int, float]:
    out = subprocess.run(
        [exe, str(root), str(workers), str(batch), str(epoch)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["images"], r["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--lkd", default="target/release/examples/folder_loader_epoch")
    a = ap.parse_args()
    cache = Path(os.environ.get("LKD_CACHE", Path.home() / ".cache" / "lkd"))
    root = cache / "bench-photos"
    make_photos(root, a.images)
    ours, theirs, ratios = [], [], []
    for r in range(a.rounds):
        runs = {}
        order = ["lkd", "torchvision"] if r % 2 == 0 else ["torchvision", "lkd"]
        for who in order:
            if who == "lkd":
                n, s = lkd_epoch(a.lkd, root, a.workers, a.batch, r)
            else:
                n, s = torchvision_epoch(root, a.workers, a.batch, r)
            if n != a.images:
                sys.exit(f"{who} delivered {n} images, expected {a.images}")
            runs[who] = n / s
        ours.append(runs["lkd"])
        theirs.append(runs["torchvision"])
        ratios.append(runs["lkd"] / runs["torchvision"])
        print(
            f"round {r} ({' then '.join(order)}): LKD {runs['lkd']:.1f} img/s, "
            f"torchvision {runs['torchvision']:.1f} img/s, ratio {ratios[-1]:.2f}",
            flush=True,
        )

    def summary(v: list[float]) -> str:
        return f"median {statistics.median(v):.2f} (range {min(v):.2f}-{max(v):.2f})"

    print(f"LKD img/s: {summary(ours)}")
    print(f"torchvision img/s: {summary(theirs)}")
    print(f"LKD / torchvision per round: {summary(ratios)}")


if __name__ == "__main__":
    main()
