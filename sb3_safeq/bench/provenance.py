"""Where and how a benchmark folder was produced: the machine and every invocation that added runs to it."""

import json
import os
import platform
import shlex
import time
from pathlib import Path
from typing import Any

#: One JSON object per line: ``{"date", "command", "machine", "new_runs", "wall_time_s"}``.
INVOCATIONS_FILE = "invocations.jsonl"


def _cpu_model() -> str:
    # Kept: SB3's get_system_info names the OS and the versions, not the CPU nor its cores.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    """
    :return: the CPU and its core count, then what SB3's ``get_system_info`` reports (OS, versions of Python,
        Stable-Baselines3, PyTorch, NumPy, Gymnasium, ..., GPU), on one line
    """
    from stable_baselines3.common.utils import get_system_info

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    system, _ = get_system_info(print_info=False)
    return ", ".join(
        [f"{_cpu_model()}", f"{cores} cores available", *(f"{key} {value}" for key, value in system.items())]
    )


def record_invocation(out_dir: Path, argv: list[str], new_runs: int, wall_time_s: float) -> None:
    """
    Append this invocation to the folder's ``invocations.jsonl``.

    :param out_dir: the results folder
    :param argv: the command-line arguments of ``sb3-safeq bench``
    :param new_runs: the runs this invocation finished
    :param wall_time_s: its wall time
    """
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "sb3-safeq bench " + shlex.join(argv),
        "machine": machine_description(),
        "new_runs": new_runs,
        "wall_time_s": round(wall_time_s, 1),
    }
    with (out_dir / INVOCATIONS_FILE).open("a") as stream:
        stream.write(json.dumps(record) + "\n")


def read_invocations(out_dir: Path) -> list[dict[str, Any]]:
    """
    :param out_dir: the results folder
    :return: its recorded invocations, oldest first (empty without the file; unreadable lines are skipped)
    """
    path = out_dir / INVOCATIONS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
