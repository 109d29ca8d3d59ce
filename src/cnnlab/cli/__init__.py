"""The ``cnnlab`` command: parse arguments, call the library, print. Nothing outside this package
imports it; each command lives in its own module here.

    cnnlab train [--model default] ...     train, evaluate each epoch, save a run directory
    cnnlab evaluate [RUN...]               re-measure saved runs (several: also their ensemble)
    cnnlab ensemble RECIPE --seeds 0-15    train a committee (under mpiexec: one net per process)
    cnnlab predict [RUN] IMAGE...          classify your own digit pictures
    cnnlab calibrate RUN                   fit the run's temperature (calibrated probabilities)
    cnnlab summary MODEL                   layers, output shapes, parameter counts
    cnnlab models                          the recipes and architectures of the zoo
    cnnlab show WHAT [RUN] / report [RUN]  pictures and an HTML page of a run
                                           (no RUN: the model that ships with cnnlab)
    cnnlab export RUN --onnx m.onnx --torch w.safetensors   the model for ONNX Runtime, PyTorch
    cnnlab speedrun [--seeds 0,1,2,3,4]    time the fastest recipe to 99% test accuracy
    cnnlab example / reproduce / experiment
    cnnlab --import MODULE COMMAND ...     import a module first (one that registers your own models);
                                           also $CNNLAB_IMPORT; installed packages' models come from
                                           the entry-point group cnnlab.models

Exit codes (``cli/scripting.py``, docs/scripting.md): 0 success; 1 failed in part (some pictures of
predict, a training that finished no epoch or diverged); 2 usage error (the command line alone is
wrong); 3 bad input (a run, picture, data set or disk that cannot be used); 130 interrupted; 141 the
reader of the output went away. Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from .. import __version__
from ..checkpoint import RunError
from ..data import DataError
from ..errors import SettingError
from . import calibrate, ensemble, evaluate, example, predict, reproduce, speedrun, summary, train
from .scripting import BAD_INPUT, BROKEN_PIPE, INTERRUPTED, PARTIAL, USAGE, UsageError

IMPORT_ENV = "CNNLAB_IMPORT"
IMPORT_HELP = (f"import MODULE (a module name on PYTHONPATH, or a .py file) before the command runs, e.g. one that "
               f"calls cnnlab.models.register for a model of your own; repeatable; also ${IMPORT_ENV} "
               f"(comma-separated)")


def import_user_modules(names) -> None:
    """Import the modules a user asked for (``--import``, ``$CNNLAB_IMPORT``), e.g. ones that register
    their models with ``cnnlab.models.register``, so that runs of those models load.

    Args:
        names: module names (``mypkg.nets``) or paths of .py files.

    Raises:
        UsageError: no such module or file.
        ValueError: importing it failed (the message names the module and the error).
    """
    for name in names:
        try:
            if name.endswith(".py"):
                path = Path(name)
                if not path.is_file():
                    raise UsageError(f"--import {name}: no such file")
                known = sys.modules.get(path.stem)
                if known is not None and Path(getattr(known, "__file__", "") or "").resolve() == path.resolve():
                    continue  # imported already (e.g. by a command before, in this process)
                spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(path.stem, None)
                    raise
            else:
                importlib.import_module(name)
        except UsageError:
            raise
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                raise UsageError(f"--import {name}: no module named {exc.name!r} (is its folder on PYTHONPATH?)") \
                    from None
            raise ValueError(f"--import {name}: importing it failed: {type(exc).__name__}: {exc}") from exc
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the user's module: any error it raises is one line
            raise ValueError(f"--import {name}: importing it failed: {type(exc).__name__}: {exc}") from exc


def _imports(args) -> list[str]:
    """The modules to import, in order: $CNNLAB_IMPORT, then --import before and after the command."""
    env = [n.strip() for n in os.environ.get(IMPORT_ENV, "").split(",") if n.strip()]
    return env + (getattr(args, "imports_first", None) or []) + (getattr(args, "imports", None) or [])


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
    parser.add_argument("--import", dest="imports_first", action="append", default=None, metavar="MODULE",
                        help=IMPORT_HELP)
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
    command("predict", "classify your own images with a saved run (no RUN: the shipped model)", predict.add_arguments,
            predict.run)
    command("calibrate", "fit a saved run's temperature on its validation set (calibrated probabilities)",
            calibrate.add_arguments, calibrate.run)
    command("summary", "layers, output shapes and parameter counts", summary.add_summary_arguments,
            summary.run_summary)
    command("models", "list the recipes and architectures of the zoo", summary.add_models_arguments,
            summary.run_models)

    p = sub.add_parser("show", help="draw a picture of a saved run (PNG)", formatter_class=_Formatter)
    p.add_argument("what", choices=["filters", "featuremaps", "curves", "confusion", "mistakes", "augment",
                                    "gradcam", "convert"],
                   help="filters: learned kernels; featuremaps: every conv/pool layer's maps for IMAGE; "
                        "gradcam: Grad-CAM, which parts of IMAGE drove the answer; "
                        "curves: loss and accuracy per epoch; confusion: test confusion matrix; "
                        "mistakes: misclassified test images; augment: training images as the run's "
                        "augmentation changed them; convert: each step of PICTURE's conversion to MNIST's "
                        "form (`show convert PICTURE [--run RUN]`)")
    p.add_argument("run", nargs="?", default=None,
                   help="run directory written by `cnnlab train` (default: the model that ships with cnnlab; "
                        "`show featuremaps IMAGE` uses it too); for convert: the PICTURE")
    p.add_argument("image", nargs="?", default=None,
                   help="for featuremaps and gradcam: a PNG/JPEG file, or test:N for test image N "
                        "(default: test:0)")
    p.add_argument("--layer", type=_layer_arg, default=None,
                   help="for filters: the conv layer, an index into a Sequential's layers or the module path "
                        "of a model with its own forward, e.g. block1.body.0 (default: the first conv layer); "
                        "for gradcam: the conv layer whose maps are weighed (default: the last)")
    p.add_argument("--out", default=None,
                   help="PNG file to write (default: RUN/<what>.png; for the shipped model ./<what>.png; "
                        "convert: <picture name>-convert.png here)")
    p.add_argument("--run", dest="with_run", default=None, help="for convert: a run whose prediction to add")
    p.set_defaults(func=lambda a: _lazy("cli.show", "cmd_show")(a))

    p = sub.add_parser("report", help="one self-contained HTML page about a run", formatter_class=_Formatter)
    p.add_argument("run", nargs="?", default=None,
                   help="run directory written by `cnnlab train` (default: the model that ships with cnnlab)")
    p.add_argument("--out", default=None,
                   help="HTML file to write (default: RUN/report.html; for the shipped model ./report.html)")
    p.set_defaults(func=lambda a: _lazy("cli.show", "cmd_report")(a))


    command("export", "write a run's model for another runtime (ONNX, PyTorch)",
            lambda p: _lazy("cli.export", "add_arguments")(p), lambda a: _lazy("cli.export", "run")(a))
    command("serve", "a live demo in the browser: draw a digit, watch a run classify it",
            lambda p: _lazy("cli.serve", "add_arguments")(p), lambda a: _lazy("cli.serve", "run")(a))
    command("speedrun", "time the fastest recipe to 99%% MNIST test accuracy, several seeds", speedrun.add_arguments,
            speedrun.run)
    command("example", "small 1-D and 3-D convolution examples beyond images", example.add_arguments, example.run)
    command("reproduce", "reproduce Nielsen's chapter-6 table", reproduce.add_reproduce_arguments,
            reproduce.run_reproduce)
    command("experiment", "experiments: choose the pooling on validation data", reproduce.add_experiment_arguments,
            reproduce.run_experiment)
    for p in sub.choices.values():  # every command: a run may name a model that a user's module registers
        p.add_argument("--import", dest="imports", action="append", default=None, metavar="MODULE", help=IMPORT_HELP)
    return parser


def _layer_arg(text: str):
    """--layer: a whole number (a Sequential's layer index) or a module path such as block1.body.0."""
    return int(text) if text.lstrip("-").isdigit() else text


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
        import_user_modules(_imports(args))
        return args.func(args) or 0
    except BrokenPipeError:  # e.g. `cnnlab summary best | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return BROKEN_PIPE  # as a shell reports a command ended by SIGPIPE
    except (UsageError, SettingError) as exc:  # the command line alone is wrong (a flag's value)
        print(error_line(args.command, exc), file=sys.stderr)
        return USAGE
    except FloatingPointError as exc:  # training diverged; the run keeps its last good epoch
        print(error_line(args.command, exc), file=sys.stderr)
        return PARTIAL
    except (RunError, DataError, ValueError, RuntimeError, OSError) as exc:
        print(error_line(args.command, exc), file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
