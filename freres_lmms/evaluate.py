"""``python -m freres_lmms eval [lmms-eval arguments]``: lmms-eval's CLI with a truthful exit status.

Takes exactly lmms-eval's arguments (``--model``, ``--model_args``, ``--tasks``, ``--output_path``,
``--log_samples``, ``--limit``, ...; ``--include_path`` defaults to our ``task_configs``) and runs
the same evaluation, but:

* a bad configuration fails before any work: a freres-lmms model's arguments and method knobs are
  checked (``check_args``: no weights loaded) and our tasks' data are looked for before lmms-eval
  indexes its tasks;
* results go to ``--output_path/<model id>__<method settings>/`` (lmms-eval's own folder, named
  after the checkpoint only, would be shared by every method run on it);
* the exit status is 1 when lmms-eval raised, and when any sample failed (each failed sample is
  logged with its task, doc id and error; the run's records are still written), 2 for a bad
  configuration, 0 otherwise. lmms-eval's own CLI logs an error and exits 0 in every case.

Under ``accelerate launch`` each process evaluates its share of the documents, as with lmms-eval.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK_CONFIGS = ROOT / "task_configs"
# our tasks' data and the command that writes them
TASK_DATA = {"freres_synthetic": (TASK_CONFIGS / "freres_synthetic" / "data" / "test.jsonl", "make synthetic "
                                  "(python -m freres_lmms synthetic)")}


class ConfigurationError(ValueError):
    """The command cannot start: the message names the argument and the problem."""


def preflight(args) -> None:
    """Check what can be checked before lmms-eval starts: our model's arguments, our tasks' data."""
    from lmms_eval.models import get_model
    from lmms_eval.utils import simple_parse_args_string

    from .core import CompressionError
    from .lmms.wrapper import FreresQwenVL

    if not args.model or not args.tasks:
        raise ConfigurationError("--model and --tasks are required")
    try:
        model_cls = get_model(args.model)
    except ValueError as err:
        raise ConfigurationError(str(err).split(" in available models")[0]) from None
    if isinstance(model_cls, type) and issubclass(model_cls, FreresQwenVL):
        model_args = simple_parse_args_string(args.model_args or "")
        model_args.setdefault("batch_size", args.batch_size)
        if args.device:
            model_args.setdefault("device", args.device)
        try:
            model_cls.check_args(**model_args)
        except (ValueError, KeyError, TypeError, CompressionError) as err:
            message = err.args[0] if isinstance(err, KeyError) else err
            raise ConfigurationError(f"--model {args.model} --model_args: {message}") from None
    for task in str(args.tasks).split(","):
        data, command = TASK_DATA.get(task, (None, None))
        if data is not None and not data.is_file():
            raise ConfigurationError(f"task {task}: no data at {data}; write it with {command}")


def run_folder(model: str, model_args: str | None) -> str:
    """One output folder per model id and method settings (lmms-eval names its folder after the
    checkpoint only, so two methods on one checkpoint would share it)."""
    from lmms_eval.utils import simple_parse_args_string

    settings = {k: v for k, v in simple_parse_args_string(model_args or "").items()
                if k not in ("pretrained", "device", "batch_size", "resume")}
    name = "__".join([model, *(f"{k}={v}" for k, v in sorted(settings.items()))])
    return re.sub(r"[^\w.=-]+", "_", name)


def main(argv: list[str] | None = None) -> int:
    from lmms_eval.__main__ import cli_evaluate_single, parse_eval_args
    from lmms_eval.utils import make_table

    from .lmms.wrapper import FreresQwenVL

    argv = sys.argv[1:] if argv is None else argv
    saved, sys.argv = sys.argv, ["python -m freres_lmms eval", *argv]
    try:
        _, args = parse_eval_args()
    finally:
        sys.argv = saved
    if args.include_path is None:
        args.include_path = str(TASK_CONFIGS)
    try:
        preflight(args)
    except ConfigurationError as err:
        print(f"freres_lmms eval: {err}", file=sys.stderr)
        return 2
    if args.output_path:
        args.output_path = str(Path(args.output_path) / run_folder(args.model, args.model_args))
    from lmms_eval.models import log_format
    from loguru import logger

    # lmms-eval's CLI sets the log level from --verbosity (INFO by default) in cli_evaluate, which
    # this command does not call; without it importing lmms_eval.models leaves WARNING, and the
    # run's INFO lines (where results went, how many samples came from the resume store) vanish; the
    # sink looks sys.stdout up at each line, so a replaced stdout (a test's capture) gets them
    logger.remove()
    logger.add(lambda message: sys.stdout.write(message), level=args.verbosity, format=log_format)
    import torch
    from accelerate import Accelerator

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        # joins the process group when started by accelerate launch or torchrun, as lmms-eval's CLI
        # does; without a GPU the processes talk over gloo
        Accelerator(cpu=not torch.cuda.is_available())
    FreresQwenVL.failed_samples = 0
    try:
        results, _ = cli_evaluate_single(args)
    except Exception as err:  # lmms-eval's CLI would log this and exit 0
        import traceback

        traceback.print_exc()
        print(f"freres_lmms eval: the evaluation failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if results is not None:
        print(make_table(results))
    if FreresQwenVL.failed_samples:
        print(f"freres_lmms eval: {FreresQwenVL.failed_samples} sample(s) failed (their errors are logged above and in "
              f"the samples' records); the metrics cover the answered samples only", file=sys.stderr)
        return 1
    return 0
