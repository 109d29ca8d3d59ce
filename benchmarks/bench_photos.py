"""How many synthetic photographs of digits a trained run reads right, per lighting condition
(tests/photos.py: MNIST test digits as pen on paper under gradients, vignettes, shadows, coloured
paper, JPEG, noise, blur, cut by the frame, light on dark); and, with --calibration, the run's
expected calibration error on the test set before and after temperature scaling and how often
`cnnlab predict` flags clean MNIST test digits.

    python benchmarks/bench_photos.py RUN [--per 200] [--src /work/main/src]

--src picks the cnnlab whose picture conversion is measured (another checkout's src/ gives the
"before"); the photos are the same for every --src (seeded by condition and index).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a trained run directory")
    ap.add_argument("--per", type=int, default=200, help="photos per condition (MNIST test digits 0..per-1)")
    ap.add_argument("--src", default=str(HERE.parents[1] / "src"), help="the cnnlab source tree to measure")
    ap.add_argument("--conditions", default=None, help="comma-separated subset of the conditions")
    ap.add_argument("--calibration", action="store_true", help="also ECE and flag rates (needs this checkout)")
    ap.add_argument("--fonts", action="store_true", help="also typeset digits: 0-9 in each installed font of "
                    "tests/photos.py, photographed under each condition")
    args = ap.parse_args()
    sys.path.insert(0, args.src)
    sys.path.insert(0, str(HERE.parents[1] / "tests"))
    import cnnlab  # noqa: PLC0415
    from cnnlab import runs  # noqa: PLC0415
    from cnnlab.autograd import Tensor, no_grad  # noqa: PLC0415
    from cnnlab.data import DataError, load_mnist, standardize, to_mnist_form  # noqa: PLC0415
    from photos import CONDITIONS, FONTS, font_ink, mnist_ink, photograph  # noqa: PLC0415

    print(f"cnnlab from {Path(cnnlab.__file__).parent}")
    run = runs.load(args.run)
    model = runs.runnable(run.model)
    mnist = load_mnist()
    digits, labels = mnist.test_images[:args.per], mnist.test_labels[:args.per]

    def logits_of(forms):
        x = standardize(np.stack(forms), run.config.mean, run.config.std).reshape(-1, 1, 28, 28)
        with no_grad():
            return np.asarray(model(Tensor(x)).numpy(), dtype=np.float64)

    conditions = args.conditions.split(",") if args.conditions else CONDITIONS
    print(f"{'condition':14s} {'right':>7s} {'refused':>8s}  seconds")
    for cond in conditions:
        t0 = time.perf_counter()
        forms, kept, refused = [], [], 0
        for i, d in enumerate(digits):
            rng = np.random.default_rng([CONDITIONS.index(cond), i])
            try:
                forms.append(to_mnist_form(photograph(mnist_ink(d), cond, rng)))
                kept.append(i)
            except DataError:
                refused += 1
        right = int((logits_of(forms).argmax(1) == labels[kept]).sum()) if forms else 0
        print(f"{cond:14s} {100 * right / len(digits):6.1f}% {refused:8d}  {time.perf_counter() - t0:6.1f}")

    if args.fonts:
        fonts = [f for f in FONTS if f.exists()]
        glyphs = [(font_ink(str(k), f), k) for f in fonts for k in range(10)]
        print(f"typeset digits: 0-9 in {len(fonts)} fonts ({', '.join(f.stem for f in fonts)})")
        for cond in conditions:
            forms, kept, refused = [], [], 0
            for i, (ink, k) in enumerate(glyphs):
                try:
                    forms.append(to_mnist_form(photograph(ink, cond, np.random.default_rng([50, CONDITIONS.index(cond), i]))))
                    kept.append(k)
                except DataError:
                    refused += 1
            right = int((logits_of(forms).argmax(1) == np.array(kept)).sum()) if forms else 0
            print(f"  {cond:14s} {right:3d} of {len(glyphs)} right, {refused} refused")

    if args.calibration:
        from cnnlab import calibration  # noqa: PLC0415
        from cnnlab.data import shape_doubt  # noqa: PLC0415

        test_x, test_y = mnist.test_images, mnist.test_labels
        logits = np.concatenate([logits_of(list(test_x[i:i + 1000])) for i in range(0, len(test_x), 1000)])
        t = runs.temperature(args.run)
        for name, temp in (("raw (T=1)", 1.0), (f"calibrated (T={t:.3f})", t)):
            p = calibration.softmax(logits, temp)
            print(f"test set, {name}: ECE {100 * calibration.expected_calibration_error(p, test_y):.3f}%, "
                  f"NLL {calibration.nll(logits, test_y, temp):.4f}")
        p = calibration.softmax(logits[:1000], t)
        flags = [calibration.flag(row, shape_doubt(img)) for row, img in zip(p, test_x[:1000])]
        doubt = sum(f is not None and f.startswith("not a digit") for f in flags)
        unsure = sum(f is not None and f.startswith("not confident") for f in flags)
        wrong = p.argmax(1) != test_y[:1000]
        print(f"1000 MNIST test digits: {doubt} 'not a digit?', {unsure} 'not confident' "
              f"({int(wrong.sum())} wrong; {sum(f is not None for f, w in zip(flags, wrong) if w)} of them flagged)")
        # as photographs on flat paper, through the conversion
        forms = [to_mnist_form(photograph(mnist_ink(d), "clean", np.random.default_rng([99, i])))
                 for i, d in enumerate(test_x[:1000])]
        p = calibration.softmax(logits_of(forms), t)
        flags = [calibration.flag(row, shape_doubt(f)) for row, f in zip(p, forms)]
        print(f"the same as clean photos: {sum(f is not None and f.startswith('not a digit') for f in flags)} "
              f"'not a digit?', {sum(f is not None and f.startswith('not confident') for f in flags)} "
              f"'not confident', {int((p.argmax(1) != test_y[:1000]).sum())} wrong")


if __name__ == "__main__":
    main()
