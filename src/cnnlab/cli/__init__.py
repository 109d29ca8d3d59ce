"""The ``cnnlab`` command: parse arguments, call the library, print. Nothing outside this package
imports it; each command lives in its own module here.

    cnnlab train [--model default] ...     train, evaluate each epoch, save a run directory
    cnnlab evaluate RUN...                 re-measure saved runs (several: also their ensemble)
    cnnlab ensemble RECIPE --seeds 0-15    train a committee (under mpiexec: one net per process)
    cnnlab predict RUN IMAGE...            classify your own digit pictures
    cnnlab calibrate RUN                   fit the run's temperature (calibrated probabilities)
    cnnlab summary MODEL                   layers, output shapes, parameter counts
    cnnlab models                          the recipes and architectures of the zoo
    cnnlab show WHAT RUN / report RUN      pictures and an HTML page of a run
    cnnlab example / reproduce / experiment

Exit codes: 0 success; 1 some inputs failed (predict) or no epoch finished; 2 bad arguments or
input (one line on stderr); 130 interrupted; 141 the reader of the output went away.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__
from ..checkpoint import RunError
from ..data import DataError
from ..errors import SettingError
from . import calibrate, ensemble, evaluate, example, predict, reproduce, summary, train


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, unless its help already says what the default is, or there is
    none worth showing (None, False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default:" in text or action.default is None or action.default is False:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnlab", formatter_class=_Formatter,
                                     description="Convolutional neural networks from first principles.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name, help, add_arguments, run):
        p = sub.add_parser(name, help=help, formatter_class=_Formatter)
        add_arguments(p)
        p.set_defaults(func=run)
        return p

    command("train", "train a model and report its test accuracy", train.add_arguments, train.run)
    command("evaluate", "measure saved runs on their validation and test sets (several: also their ensemble)",
            evaluate.add_arguments, evaluate.run)
    command("ensemble", "train one net per seed (under mpiexec, in parallel) and evaluate the committee",
            ensemble.add_arguments, ensemble.run)
    command("predict", "classify your own images with a saved run", predict.add_arguments, predict.run)
    command("calibrate", "fit a saved run's temperature on its validation set (calibrated probabilities)",
            calibrate.add_arguments, calibrate.run)
    command("summary", "layers, output shapes and parameter counts", summary.add_summary_arguments,
            summary.run_summary)
    command("models", "list the recipes and architectures of the zoo", lambda p: None, summary.run_models)

    p = sub.add_parser("show", help="draw a picture of a saved run (PNG)", formatter_class=_Formatter)
    p.add_argument("what", choices=["filters", "featuremaps", "curves", "confusion", "mistakes", "augment", "convert"],
                   help="filters: learned kernels; featuremaps: every conv/pool layer's maps for IMAGE; "
                        "curves: loss and accuracy per epoch; confusion: test confusion matrix; "
                        "mistakes: misclassified test images; augment: training images as the run's "
                        "augmentation changed them; convert: each step of PICTURE's conversion to MNIST's "
                        "form (`show convert PICTURE [--run RUN]`)")
    p.add_argument("run", help="run directory written by `cnnlab train` (for convert: the PICTURE)")
    p.add_argument("image", nargs="?", default=None,
                   help="for featuremaps: a PNG/JPEG file, or test:N for test image N (default: test:0)")
    p.add_argument("--layer", type=int, default=None,
                   help="for filters: index of the conv layer in the model (default: the first conv layer)")
    p.add_argument("--out", default=None,
                   help="PNG file to write (default: RUN/<what>.png; convert: <picture name>-convert.png here)")
    p.add_argument("--run", dest="with_run", default=None, help="for convert: a run whose prediction to add")
    p.set_defaults(func=lambda a: _lazy("cli.show", "cmd_show")(a))

    p = sub.add_parser("report", help="one self-contained HTML page about a run", formatter_class=_Formatter)
    p.add_argument("run", help="run directory written by `cnnlab train`")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN/report.html)")
    p.set_defaults(func=lambda a: _lazy("cli.show", "cmd_report")(a))


    command("serve", "a live demo in the browser: draw a digit, watch a run classify it",
            lambda p: _lazy("cli.serve", "add_arguments")(p), lambda a: _lazy("cli.serve", "run")(a))
    command("example", "small 1-D and 3-D convolution examples beyond images", example.add_arguments, example.run)
    command("reproduce", "reproduce Nielsen's chapter-6 table", reproduce.add_reproduce_arguments,
            reproduce.run_reproduce)
    command("experiment", "experiments: choose the pooling on validation data", reproduce.add_experiment_arguments,
            reproduce.run_experiment)
    return parser


def _lazy(module, name):
    """A command implemented in a module imported only when it runs (matplotlib is slow to import)."""
    return getattr(importlib.import_module(f"cnnlab.{module}"), name)


def error_line(command: str, exc: Exception) -> str:
    """The one line an error is reported in; a setting is named by the flag that sets it."""
    if isinstance(exc, SettingError):
        flag = train.FLAGS.get(exc.setting, "--" + exc.setting.replace("_", "-"))
        return f"cnnlab {command}: error: {flag} {exc.problem}"
    return f"cnnlab {command}: error: {exc}"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except BrokenPipeError:  # e.g. `cnnlab summary best | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # as a shell reports a command ended by SIGPIPE
    except (RunError, DataError, ValueError, FloatingPointError, RuntimeError, OSError) as exc:
        print(error_line(args.command, exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
