"""
Where the benchmark's runs execute: fresh local processes (:class:`LocalExecutor`) or Ray tasks on one or many
machines (:class:`RayExecutor`). An executor only runs a function on tasks and hands back what each returned (or the
error it raised); the driver, :func:`~sb3_safeq.bench.runner.run_benchmark`, is the only writer of the results folder,
so a folder stays resumable whichever executor ran its rows.
"""

import contextlib
import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, TypeVar

from sb3_safeq.bench.errors import BenchConfigError

TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")

#: The executors of ``sb3-safeq bench --executor``.
EXECUTOR_NAMES = ("local", "ray")
#: How long the Ray driver waits for a result before it looks at its signals again (Ctrl-C, SIGTERM), in seconds.
RAY_POLL_S = 0.5


class RunLostError(RuntimeError):
    """A run whose process or worker ended without a result (killed, e.g. out of memory)."""


class Executor(ABC):
    """
    Runs a function on tasks, each in a fresh process, and yields every task with its result as it finishes. Use it
    as a context manager: leaving the block by an exception (Ctrl-C, SIGTERM turned into ``KeyboardInterrupt``) stops
    the runs still going, so that no orphaned worker trains on with nobody to record its row.
    """

    @abstractmethod
    def describe(self) -> str:
        """:return: where the runs execute, for the progress log (``2 local process(es)``)"""

    @abstractmethod
    def run(
        self, function: Callable[[TaskT], ResultT], tasks: Sequence[TaskT]
    ) -> Iterator[tuple[TaskT, ResultT | Exception]]:
        """
        :param function: a module-level function (it is pickled by name), run once per task in a fresh process
        :param tasks: its arguments
        :return: ``(task, result)`` in the order they finish; ``result`` is the exception when the run failed
            (:class:`RunLostError` when its process ended without a result)
        """

    def __enter__(self) -> "Executor":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close(interrupted=exc_type is not None)

    @abstractmethod
    def close(self, interrupted: bool) -> None:
        """
        Release the executor's resources.

        :param interrupted: stop the runs still going (else there are none left)
        """


class LocalExecutor(Executor):
    """
    ``jobs`` processes of this machine, a fresh one per run (``forkserver``, one task per child): peak memory is the
    run's own and no state leaks between runs.

    :param jobs: parallel processes
    """

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise BenchConfigError(f"--jobs must be >= 1, got {jobs}.")
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def describe(self) -> str:
        return f"{self.jobs} process(es)"

    def run(
        self, function: Callable[[TaskT], ResultT], tasks: Sequence[TaskT]
    ) -> Iterator[tuple[TaskT, ResultT | Exception]]:
        context = multiprocessing.get_context("forkserver")
        # The fork server imports the function's module once, so that every run process starts with it imported.
        context.set_forkserver_preload([function.__module__])
        self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=context, max_tasks_per_child=1)
        pending: dict[Future[ResultT], TaskT] = {self._pool.submit(function, task): task for task in tasks}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                task = pending.pop(future)
                try:
                    yield task, future.result()
                except BrokenProcessPool:
                    yield (
                        task,
                        RunLostError(
                            "its process ended without a result (killed, e.g. out of memory, or it exited while "
                            "importing the calling script: a script that ends with sys.exit(main(...)) needs "
                            '`if __name__ == "__main__":` around it)'
                        ),
                    )
                except Exception as error:  # a failed run is reported, the others go on
                    yield task, error

    def close(self, interrupted: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if interrupted:
            # ProcessPoolExecutor has no public way to stop running workers before Python 3.14 (terminate_workers);
            # its process table is emptied by shutdown, so it is read first. The workers are children of the fork
            # server: SIGTERM reaches only this process, so they would otherwise go on training, orphaned.
            workers = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in workers:
                process.terminate()
        else:
            pool.shutdown(wait=True)


def import_ray() -> Any:
    """
    :return: the ``ray`` module
    :raises BenchConfigError: Ray is not installed (one line naming the extra that brings it)
    """
    try:
        import ray
    except ImportError as error:
        raise BenchConfigError(
            f'--executor ray needs Ray, which is not installed ({error}): pip install "sb3-safeq[ray]"'
        ) from None
    return ray


class RayExecutor(Executor):
    """
    Ray tasks, one CPU each, in a fresh worker process per run (``max_calls=1``, as the local executor's one task per
    child): on the machines of a Ray cluster, or on a Ray instance of this machine started for the benchmark.

    Every machine needs sb3-safeq and the modules of ``--gym-packages`` / ``--algo-module`` installed; the results
    come back to the driver, which writes them. A Ray instance already initialised in this process (``ray.init``
    before the benchmark) is used as it is and left running.

    :param address: the cluster's address (``auto``: the one ``ray start`` recorded on this machine;
        ``ray://host:10001``: a Ray client); None: connect to a running instance if one is initialised in this
        process, else start a local one
    :param jobs: at most this many runs at once (None: as many as the cluster's CPUs take)
    """

    def __init__(self, address: str | None = None, jobs: int | None = None) -> None:
        if jobs is not None and jobs < 1:
            raise BenchConfigError(f"--jobs must be >= 1, got {jobs}.")
        self.ray = import_ray()
        self.address = address
        self.jobs = jobs
        self._started_here = False
        self._pending: list[Any] = []

    def __enter__(self) -> "RayExecutor":
        if not self.ray.is_initialized():
            # ray.init sets its own SIGTERM handler in the driver: entering before run_benchmark installs its own
            # keeps the interruption (exit code 130, rows kept) the same as with local processes.
            self.ray.init(address=self.address, include_dashboard=False, logging_level="warning")
            self._started_here = True
        return self

    def describe(self) -> str:
        cpus = int(self.ray.cluster_resources().get("CPU", 0)) if self.ray.is_initialized() else 0
        cap = "" if self.jobs is None else f", at most {self.jobs} at once"
        return f"Ray ({cpus} CPU(s) in the cluster{cap})"

    def run(
        self, function: Callable[[TaskT], ResultT], tasks: Sequence[TaskT]
    ) -> Iterator[tuple[TaskT, ResultT | Exception]]:
        ray = self.ray
        if not ray.is_initialized():
            raise RuntimeError("RayExecutor.run outside its `with` block.")
        remote = ray.remote(num_cpus=1, max_calls=1, max_retries=0)(function)
        waiting = list(tasks)
        running: dict[Any, TaskT] = {}
        while waiting or running:
            while waiting and (self.jobs is None or len(running) < self.jobs):
                task = waiting.pop(0)
                running[remote.remote(task)] = task
            self._pending = list(running)
            # A short timeout: the driver's signal handlers run between calls, not while Ray waits.
            finished, _ = ray.wait(list(running), num_returns=1, timeout=RAY_POLL_S)
            for reference in finished:
                task = running.pop(reference)
                try:
                    yield task, ray.get(reference)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as error:
                    yield task, RunLostError(f"its Ray worker ended without a result ({type(error).__name__})")
                except ray.exceptions.RayTaskError as error:
                    # The run's own exception, as the local executor reports it.
                    cause = error.cause if isinstance(error.cause, Exception) else error
                    yield task, cause
        self._pending = []

    def close(self, interrupted: bool) -> None:
        if interrupted:
            for reference in self._pending:
                with contextlib.suppress(Exception):  # finished meanwhile, or its node is gone
                    self.ray.cancel(reference, force=True)
        self._pending = []
        if self._started_here:
            self.ray.shutdown()
            self._started_here = False


def make_executor(name: str, jobs: int | None = None, address: str | None = None) -> Executor:
    """
    :param name: ``local`` or ``ray`` (:data:`EXECUTOR_NAMES`)
    :param jobs: parallel runs (local: processes, default 1; ray: a cap, default none)
    :param address: the Ray cluster's address (ray only)
    :return: the executor
    :raises BenchConfigError: an unknown name, an address for the local executor, or Ray missing
    """
    if name == "local":
        if address is not None:
            raise BenchConfigError("--address is the Ray cluster's: it needs --executor ray.")
        return LocalExecutor(1 if jobs is None else jobs)
    if name == "ray":
        return RayExecutor(address=address, jobs=jobs)
    raise BenchConfigError(f"Unknown executor {name!r}; choose among {', '.join(EXECUTOR_NAMES)}.")


__all__ = ["EXECUTOR_NAMES", "Executor", "LocalExecutor", "RayExecutor", "RunLostError", "make_executor"]
