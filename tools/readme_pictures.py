"""The README's photographed-digit pictures: three synthetic photos of MNIST test digits (a pen
stroke's look) under uneven light, each drawn by ``cnnlab show convert PICTURE --run RUN`` with the
shipped model (or RUN given).

    python tools/readme_pictures.py [--run RUN] [--out docs]

The photos come from tests/photos.py (the same generator the photo tests and
benchmarks/bench_photos.py use): a vignette, a side shadow, and everything at once (gradient,
vignette, shadow, coloured paper, noise, blur, JPEG). Writes OUT/photo-<condition>.jpg and
OUT/convert-<condition>.png.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from cnnlab import pretrained  # noqa: E402
from cnnlab.data import load_dataset  # noqa: E402
from photos import mnist_ink, photograph  # noqa: E402

CASES = (("vignette", 0), ("shadow", 1), ("everything", 2))  # (condition, which test digit of the chosen ones)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=str(pretrained.path()))
    p.add_argument("--out", default=str(ROOT / "docs"))
    args = p.parse_args()
    out = Path(args.out)
    x, y = load_dataset("mnist", validation=0).test
    picks = [int(np.flatnonzero(y == d)[0]) for d in (4, 7, 2)]  # the first 4, 7 and 2 of the test set
    rng = np.random.default_rng(0)
    for condition, k in CASES:
        photo = photograph(mnist_ink(x[picks[k]]), condition, rng)
        path = out / f"photo-{condition}.jpg"
        photo.convert("RGB").save(path, quality=90)
        subprocess.run([sys.executable, "-m", "cnnlab", "show", "convert", str(path), "--run", args.run,
                        "--out", str(out / f"convert-{condition}.png")], check=True)


if __name__ == "__main__":
    main()
