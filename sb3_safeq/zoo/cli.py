"""
``python -m sb3_safeq.zoo train|enjoy ...``: rl-zoo3's train and enjoy with SafeSupportQ (the ``sb3-safeq`` command,
:mod:`sb3_safeq.cli`, dispatches its ``train`` and ``enjoy`` here too).

The zoo knows nothing of the benchmark: ``sb3_safeq.bench`` imports the zoo's hyperparameter files, so the
dependency goes one way (``sb3-safeq bench`` is dispatched by :mod:`sb3_safeq.cli`).
"""

from sb3_safeq.commands import Command, dispatch
from sb3_safeq.safeq.arguments import InvalidArgumentError
from sb3_safeq.zoo.errors import ZooUsageError

USAGE = """usage: python -m sb3_safeq.zoo {train,enjoy,record_video,plot-safety} [options]

  train [rl-zoo3 train options]   rl-zoo3's training script with safeq (SafeSupportQ) and ppo_mask (MaskablePPO),
                                  the packaged hyperparameters and safety/* logged for every algorithm
  enjoy [rl-zoo3 enjoy options]   replay a trained model inside its safe support; reports the return and the unsafe
                                  visits
  record_video [rl-zoo3 record_video options]
                                  record a video of a trained model acting inside its safe support
  plot-safety -f LOGS --algos A.. --envs E.. -o FILE.png
                                  episode cost and cumulative unsafe visits against timesteps (monitor.csv)

'train -h' and 'enjoy -h' list the options. The same commands, and the benchmark: sb3-safeq {train,enjoy,bench}."""

#: The modules both commands import as they start (the rest of the zoo extra is checked when imported).
_ZOO_REQUIRES = ("rl_zoo3", "huggingface_sb3", "optuna", "yaml")

#: Sub-command -> the function that runs it, imported on use, so that ``--help`` stays fast.
COMMANDS: dict[str, Command] = {
    "train": Command("sb3_safeq.zoo.train:train", extra="zoo", requires=_ZOO_REQUIRES),
    "enjoy": Command("sb3_safeq.zoo.enjoy:enjoy", extra="zoo", requires=_ZOO_REQUIRES),
    "record_video": Command(
        "sb3_safeq.zoo.record_video:record_video", extra="zoo", requires=(*_ZOO_REQUIRES, "moviepy")
    ),
    "plot-safety": Command("sb3_safeq.zoo.plot_safety:plot_safety", extra="zoo", requires=("matplotlib", "pandas")),
}


def main(argv: list[str] | None = None) -> int:
    """
    Run a sub-command.

    :param argv: the command-line arguments after the program name (default: ``sys.argv[1:]``)
    :return: the exit code: 0 on success, 2 on a usage error, 1 when the zoo extra is missing (the message goes to
        stderr)
    """
    return dispatch("sb3-safeq", USAGE, COMMANDS, argv, usage_errors=(ZooUsageError, InvalidArgumentError))
