"""
What every entry point shares (``sb3-safeq``, ``python -m sb3_safeq``, ``python -m sb3_safeq.zoo``, ``python -m
sb3_safeq.bench``): sub-commands imported on use, and the optional dependencies (the extras of setup.cfg) they need.
A missing one ends the command with a one-line message naming the extra to install, not a ``ModuleNotFoundError``
traceback.

Standard library only, and no other module of the package: the subpackages import this module, so it must import
none of them (their dependencies go one way: ``sb3_safeq.cli`` -> ``sb3_safeq.bench`` -> ``sb3_safeq.zoo``).
"""

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass

#: Extra of setup.cfg -> the modules (import names) of its packages that the package imports itself. A
#: ``ModuleNotFoundError`` for one of them means that extra is missing; tests/test_packaging.py keeps the table and
#: setup.cfg in step.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "zoo": (
        "rl_zoo3",
        "huggingface_sb3",
        "optuna",
        "yaml",
        "pandas",
        "requests",
        "matplotlib",
        "moviepy",
        "tensorboard",
    ),
    "bench": ("yaml", "pandas", "scipy", "matplotlib"),
    "offline": ("minari",),
}

#: Exit code of a command whose extra is not installed (2 is a usage error, as argparse's).
MISSING_EXTRA_EXIT_CODE = 1


@dataclass(frozen=True)
class Command:
    """
    A sub-command, imported only when it runs, so that one command never pays for another's dependencies.

    :param target: ``"module:function"``; the function takes the arguments after the sub-command's name and returns
        the exit code (None means 0)
    :param extra: the extra of setup.cfg the command needs (a key of :data:`EXTRA_MODULES`)
    :param requires: the modules checked before the target is imported: a command that would only import one of them
        at its end (the benchmark's report imports pandas and matplotlib after hours of runs) fails at once
    """

    target: str
    extra: str
    requires: tuple[str, ...] = ()


def install_hint(extra: str) -> str:
    """
    :param extra: an extra of setup.cfg
    :return: the command that installs it
    """
    return f'pip install "sb3-safeq[{extra}]"'


def missing_extra_message(prog: str, extra: str, modules: Sequence[str]) -> str:
    """
    :param prog: the command's name, as the user typed it (``sb3-safeq bench``)
    :param extra: the extra the command needs
    :param modules: the missing modules
    :return: the one-line error message
    """
    names = ", ".join(repr(module) for module in modules)
    return (
        f"{prog}: error: missing optional module{'s' if len(modules) > 1 else ''} {names}: install the {extra!r} "
        f"extra: {install_hint(extra)}"
    )


def missing_modules(modules: Sequence[str]) -> list[str]:
    """
    :param modules: top-level module names
    :return: those that cannot be imported (found without importing them: ``find_spec`` runs no module code)
    """
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ValueError:  # in sys.modules without a __spec__ (e.g. a stand-in installed by a test): importable
            found = True
        if not found:
            missing.append(module)
    return missing


def run_command(
    prog: str,
    command: Command,
    arguments: list[str],
    usage_errors: tuple[type[Exception], ...] = (),
) -> int:
    """
    Import and run a sub-command.

    :param prog: the command's name, for the messages (``sb3-safeq bench``)
    :param command: the sub-command
    :param arguments: the arguments after the sub-command's name
    :param usage_errors: exceptions reported as a one-line message with exit code 2 instead of a traceback
    :return: the exit code: the command's, :data:`MISSING_EXTRA_EXIT_CODE` when its extra is missing, 2 on a usage
        error
    """
    missing = missing_modules(command.requires)
    if missing:
        print(missing_extra_message(prog, command.extra, missing), file=sys.stderr)
        return MISSING_EXTRA_EXIT_CODE
    module_name, function_name = command.target.split(":")
    try:
        run = getattr(importlib.import_module(module_name), function_name)
        code = run(arguments)
    except ModuleNotFoundError as error:
        # Only the extra's own modules: any other missing module is a broken install, whose traceback says more.
        module = (error.name or "").partition(".")[0]
        if module not in EXTRA_MODULES.get(command.extra, ()):
            raise
        print(missing_extra_message(prog, command.extra, [module]), file=sys.stderr)
        return MISSING_EXTRA_EXIT_CODE
    except usage_errors as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0


def dispatch(
    prog: str,
    usage: str,
    commands: dict[str, Command],
    argv: list[str] | None = None,
    usage_errors: tuple[type[Exception], ...] = (),
) -> int:
    """
    Run the sub-command named by the first argument.

    :param prog: the program's name (``sb3-safeq``)
    :param usage: the help text
    :param commands: sub-command name -> sub-command
    :param argv: the command-line arguments after the program name (default: ``sys.argv[1:]``)
    :param usage_errors: exceptions reported as a one-line message with exit code 2 (see :func:`run_command`)
    :return: the exit code: 0 on success, 2 on a usage error (the message goes to stderr)
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    if not argv or argv[0] not in commands:
        problem = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"{usage}\n\n{prog}: error: {problem}: choose one of {', '.join(commands)}.", file=sys.stderr)
        return 2
    name, arguments = argv[0], argv[1:]
    return run_command(f"{prog} {name}", commands[name], arguments, usage_errors)
