"""``sb3-safeq safety-record``: a checkpoint's safety counters completed with the episodes its run logged after it."""

import argparse

from sb3_safeq.common.safety_record import recover_safety_record


def main(arguments: list[str]) -> int:
    """
    Print the safety record of a run from its last checkpoint and its ``monitor.csv`` files (e.g. after a crash).

    :param arguments: the command-line arguments after ``safety-record``
    :return: the exit code: 0 (2 when the files cannot be read or matched, with a one-line message)
    """
    parser = argparse.ArgumentParser(
        prog="sb3-safeq safety-record",
        description="Complete a SafeSupportQ checkpoint's safety counters with the episodes that monitor.csv logged "
        "after it (e.g. after a crash). Read the crashed run's monitor files before resuming into the same folder.",
    )
    parser.add_argument("checkpoint", help="the checkpoint's model .zip (unpickled: trusted files only)")
    parser.add_argument("monitors", nargs="+", help="the run's k.monitor.csv files, or folders holding them")
    args = parser.parse_args(arguments)
    try:
        record = recover_safety_record(args.checkpoint, args.monitors)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    rows = [
        ("in the checkpoint", record.checkpoint),
        ("logged after it", record.since_checkpoint),
        ("total", record.total),
    ]
    print(f"{'':<20}{'steps':>12}{'unsafe visits':>16}{'cost':>14}")
    for name, counters in rows:
        print(f"{name:<20}{counters.steps:>12}{counters.unsafe_visits:>16}{counters.cumulative_cost:>14.6g}")
    print(f"{record.episodes_after_checkpoint} episode(s) ended after the checkpoint, in {len(record.files)} file(s).")
    if record.unfinished_ranks:
        print(
            f"Environment(s) {', '.join(map(str, record.unfinished_ranks))}: the episode in progress at the checkpoint "
            "had not ended at the crash; its steps after the checkpoint are in no file."
        )
    return 0
