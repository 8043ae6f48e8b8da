"""
The ``sb3-safeq`` command (also ``python -m sb3_safeq``): rl-zoo3's train and enjoy with SafeSupportQ
(:mod:`sb3_safeq.zoo`), and the benchmark (:mod:`sb3_safeq.bench`).

It owns the console script so that the subpackages depend one way: this module -> ``sb3_safeq.bench`` ->
``sb3_safeq.zoo``. Each sub-command is imported only when it runs: ``sb3-safeq train`` never imports the benchmark's
dependencies (pandas, scipy, matplotlib), and a missing extra ends its command with a one-line message.
"""

from sb3_safeq.bench import COMMAND as BENCH_COMMAND
from sb3_safeq.commands import Command, dispatch
from sb3_safeq.safeq.arguments import InvalidArgumentError
from sb3_safeq.zoo.cli import COMMANDS as ZOO_COMMANDS
from sb3_safeq.zoo.errors import ZooUsageError

USAGE = """usage: sb3-safeq {train,enjoy,record_video,plot-safety,bench,safety-record,collect} [options]

  sb3-safeq train [rl-zoo3 train options]   rl-zoo3's training script with safeq (SafeSupportQ) and ppo_mask
                                            (MaskablePPO), the packaged hyperparameters, safety/* logged for every
                                            algorithm (--no-safety-logger: off) and one torch thread by default
  sb3-safeq enjoy [rl-zoo3 enjoy options]   replay a trained model inside its safe support; reports the return
                                            and the unsafe visits
  sb3-safeq record_video [rl-zoo3 record_video options]
                                            record a video (mp4) of a trained model acting inside its safe support
  sb3-safeq plot-safety -f LOGS --algos A.. --envs E.. -o FILE.png
                                            episode cost and cumulative unsafe visits from monitor.csv
  sb3-safeq bench [options]                 benchmark: algorithms x environments x seeds, resumable, with a report
  sb3-safeq safety-record CHECKPOINT MONITOR...
                                            a checkpoint's safety counters completed with the episodes its run
                                            logged in monitor.csv after it (e.g. after a crash)
  sb3-safeq collect --env ID --steps N --dataset-id ID [--behavior B]
                                            log a safe behavior into a local Minari dataset with supports and
                                            costs, for SafeSupportQ.learn_offline

'sb3-safeq <command> -h' lists a command's options. train, enjoy,
record_video and plot-safety need pip install "sb3-safeq[zoo]", bench needs pip install "sb3-safeq[bench]", collect
needs pip install "sb3-safeq[offline]"."""

#: Sub-command -> the function that runs it, imported on use, so that ``sb3-safeq --help`` stays fast.
COMMANDS: dict[str, Command] = {
    **ZOO_COMMANDS,
    "bench": BENCH_COMMAND,
    # No extra: the package's own requirements suffice.
    "safety-record": Command("sb3_safeq.safety_record_cli:main", extra=""),
    "collect": Command("sb3_safeq.collect_cli:main", extra="offline", requires=("minari",)),
}


def main(argv: list[str] | None = None) -> int:
    """
    Run a sub-command.

    :param argv: the command-line arguments after the program name (default: ``sys.argv[1:]``)
    :return: the exit code: the sub-command's; 2 on a usage error, 1 when the extra the sub-command needs is missing
        (the message goes to stderr)
    """
    # ZooUsageError from any sub-command (the benchmark reads the zoo's hyperparameter files too), and a SafeSupportQ
    # argument that cannot work (e.g. `-params alpha:-1`): one line naming the fix, not a traceback.
    return dispatch("sb3-safeq", USAGE, COMMANDS, argv, usage_errors=(ZooUsageError, InvalidArgumentError))
