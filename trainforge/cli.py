"""The ``trainforge`` command line: parses arguments and hands off to the library (imports lazily)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__
from .errors import TrainforgeError


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(output_dir=args.output_dir, max_epochs=args.max_epochs, print_steps=args.print_steps)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from .training_config import TrainingConfig

    if args.action == "defaults":
        print(TrainingConfig.describe())
    elif args.action == "schema":
        from .config import describe

        print(describe(), end="")
    elif args.action == "check":
        from .config.hydra_cli import check_experiment_file, is_experiment_file
        from .config_check import check_config
        from .errors import ConfigError

        if is_experiment_file(args.path):  # TorchOk's sections (task, data...): an experiment, not a TrainingConfig
            print(check_experiment_file(args.path, args.overrides), end="")
            return 0
        config = TrainingConfig.from_yaml(args.path)
        try:
            check_config(config)  # the same checks Trainer.setup runs before training
        except TrainforgeError as error:
            raise ConfigError(f"{args.path}: {error}") from None
        print(f"{args.path}: valid")
        print(config.to_yaml(), end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    page = build_report(args.run_dir, strict=args.strict)
    print(f"report: {page}")
    if args.open:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .config.hydra_cli import locate, run_command

    source = locate(args.config, args.config_path or args.config_dir, args.config_name)
    results = run_command(args.command, source, args.overrides, multirun=args.multirun, objective=args.objective)
    failed = [r for r in results if r.error]
    return 1 if failed and len(failed) == len(results) else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export.run import export_run

    shape = _input_shape(args.input_shape) if args.input_shape else None
    result = export_run(args.source, args.onnx, opset_version=args.opset, input_shape=shape,
                        overwrite=args.overwrite, exporter=args.exporter)
    print(f"checkpoint: {result.source}")
    print(f"onnx: {result.path.resolve()}")
    print(result.summary())
    return 0


def _input_shape(text: str) -> tuple[int, ...]:
    from .errors import ConfigError

    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"--input-shape {text!r}: expected C,H,W of positive integers, e.g. 3,224,224")
    return shape


def _cmd_ls(args: argparse.Namespace) -> int:
    from .registry import CATALOGUE, get_registry

    if args.registry is None:
        for name, (_, description) in CATALOGUE.items():
            print(f"{name:<14} {len(get_registry(name).list()):>5}  {description}")
        return 0
    found = get_registry(args.registry)
    names = found.list(args.pattern)
    if not names:
        print(f"{args.registry}: nothing matches {args.pattern!r}", file=sys.stderr)
        return 1
    width = min(40, max(len(n) for n in names))
    for name in names:
        try:
            help_line = found.help(name)
        except Exception as error:  # one broken library entry must not hide the others
            help_line = f"(help unavailable: {type(error).__name__})"
        print(f"{name:<{width}}  {help_line}")
    return 0


def _add_run_parser(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    run = commands.add_parser(name, help=help, description=help + ". Overrides use Hydra's syntax: key=value, "
                              "+new_key=value, ~key, and with --multirun key=a,b,c or hydra/sweeper=optuna.")
    run.add_argument("--config", metavar="FILE", help="the experiment YAML file")
    run.add_argument("-cp", "--config-path", metavar="DIR", help="folder of the experiment configs")
    run.add_argument("-cn", "--config-name", metavar="NAME", help="experiment name in that folder (without .yaml)")
    run.add_argument("-cd", "--config-dir", metavar="DIR", help="same as --config-path")
    run.add_argument("-m", "--multirun", action="store_true", help="sweep over comma-separated values (Hydra)")
    run.add_argument("--objective", metavar="METRIC", default=None,
                     help="metric a sweep compares runs by (default: ModelCheckpoint's monitor, else valid/loss)")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides, e.g. trainer.max_epochs=1")
    run.set_defaults(func=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainforge",
        description="Train and fine-tune PyTorch vision models: recipes, a Trainer, YAML experiments.",
    )
    parser.add_argument("--version", action="version", version=f"trainforge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="train the default experiment (small CNN, embedded digits data)")
    demo.add_argument("--output-dir", default=None, help="run folder (default: runs/demo/<timestamp>)")
    demo.add_argument("--max-epochs", type=int, default=10)
    demo.add_argument("--print-steps", type=int, default=None, help="a line every N steps instead of per epoch")
    demo.set_defaults(func=_cmd_demo)

    config = commands.add_parser("config", help="inspect TrainingConfig settings")
    config_actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    config_actions.add_parser("defaults", help="print every setting with its default and help")
    config_actions.add_parser("schema", help="print every key of an experiment YAML with its default and help")
    check = config_actions.add_parser(
        "check", help="validate a TrainingConfig YAML file as training would (names, nested keys, monitors) and "
        "print it resolved",
    )
    check.add_argument("path")
    check.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides (experiment files)")
    config.set_defaults(func=_cmd_config)

    _add_run_parser(commands, "train", "train the experiment of one YAML file")
    _add_run_parser(commands, "test", "evaluate a trained experiment on its data.TEST sets")
    _add_run_parser(commands, "predict", "predict on an experiment's data.PREDICT sets")
    ls = commands.add_parser("ls", help="list registered components with one line of help each")
    ls.add_argument("registry", nargs="?", default=None, help="losses, optimizers, backbones, ... (none: all)")
    ls.add_argument("pattern", nargs="?", default=None, help="shell pattern, e.g. '*Loss' or 'resnet*'")
    ls.set_defaults(func=_cmd_ls)

    report = commands.add_parser(
        "report", help="(re)build RUN_DIR/report/index.html from a run folder (also written at the end of fit)"
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, with metrics.jsonl (runs/<name>/<time>)")
    report.add_argument("--strict", action="store_true", help="fail on the first section error instead of warning")
    report.add_argument("--open", action="store_true", help="open the page in the default web browser")
    report.set_defaults(func=_cmd_report)

    export = commands.add_parser(
        "export", help="export a trained run's model to ONNX, verified with onnxruntime",
        description="Rebuild the model of a YAML experiment's run folder (its best checkpoint by the monitored "
        "metric, else the newest) or of one checkpoint folder, export it to ONNX and check onnxruntime's outputs "
        "against torch's.",
    )
    export.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT",
                        help="runs/<experiment>/<time>, or <run folder>/checkpoints/<name>")
    export.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    export.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset version (default: 17)")
    export.add_argument("--input-shape", default=None, metavar="C,H,W",
                        help="input size (default: task.params.inputs, else one sample of the run's data)")
    export.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                        help="torch.onnx exporter (dynamo needs onnxscript and opset >= 18)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing file trainforge did not write")
    export.set_defaults(func=_cmd_export)

    from .data.cli import add_parser as add_data_parser  # data validate|cache|preview

    add_data_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trainforge`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides after an option (train --multirun a=1,2) land here; only train/test/predict take them
        if getattr(args, "func", None) is not _cmd_run or any(e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except TrainforgeError as error:  # a user error: its message says what to fix, no traceback
        print(f"trainforge {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
