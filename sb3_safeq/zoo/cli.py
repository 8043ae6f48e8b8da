"""The ``sb3-safeq`` command (also ``python -m sb3_safeq.zoo``): rl-zoo3's train and enjoy with SafeSupportQ."""

import importlib
import sys

from sb3_safeq.zoo.errors import ZooUsageError

USAGE = """usage: sb3-safeq {train,enjoy,bench} [options]

  sb3-safeq train [rl-zoo3 train options]   rl-zoo3's training script with safeq (SafeSupportQ) and ppo_mask
                                            (MaskablePPO) and the packaged hyperparameters
  sb3-safeq enjoy [rl-zoo3 enjoy options]   replay a trained model inside its safe support; reports the return
                                            and the unsafe visits
  sb3-safeq bench [options]                 benchmark: algorithms x environments x seeds, resumable, with a report

'sb3-safeq train -h', 'sb3-safeq enjoy -h' and 'sb3-safeq bench -h' list the options."""

#: Sub-command -> "module:function"; modules are imported on use, so ``sb3-safeq --help`` stays fast.
COMMANDS: dict[str, str] = {
    "train": "sb3_safeq.zoo.train:train",
    "enjoy": "sb3_safeq.zoo.enjoy:enjoy",
    "bench": "sb3_safeq.bench.cli:main",
}


def main(argv: list[str] | None = None) -> int:
    """
    Run a sub-command.

    :param argv: the command-line arguments after the program name (default: ``sys.argv[1:]``)
    :return: the exit code: 0 on success, 2 on a usage error (the message goes to stderr)
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if not argv or argv[0] not in COMMANDS:
        problem = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"{USAGE}\n\nsb3-safeq: error: {problem}: choose one of {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    command, arguments = argv[0], argv[1:]
    module_name, function_name = COMMANDS[command].split(":")
    run = getattr(importlib.import_module(module_name), function_name)
    try:
        code = run(arguments)
    except ZooUsageError as error:
        print(f"sb3-safeq {command}: error: {error}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0
