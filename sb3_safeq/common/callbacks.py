"""Callbacks that log the safety counters of any SB3 algorithm trained on :class:`SafetyWrapper` environments."""

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from sb3_safeq.common.wrappers import SafetyCounters


def record_safety(logger: Logger, counters: SafetyCounters) -> None:
    """
    Write the safety counters under the ``safety/`` prefix of an SB3 logger.

    :param logger: the logger
    :param counters: the counters to record
    """
    logger.record("safety/unsafe_visits", counters.unsafe_visits)
    logger.record("safety/cumulative_cost", counters.cumulative_cost)
    logger.record("safety/out_of_support_actions", counters.out_of_support_actions)
    logger.record("safety/shielded_actions", counters.shielded_actions)
    logger.record("safety/empty_support_states", counters.empty_support_states)


class SafetyLoggerCallback(BaseCallback):
    """
    Count unsafe visits, costs, out-of-support actions and empty-support states from the step ``info`` dicts of a
    training run and log them under ``safety/``. Works for any SB3 algorithm (DQN, PPO, MaskablePPO, ...) whose
    environments are wrapped with :class:`sb3_safeq.SafetyWrapper`; SafeSupportQ logs the same keys by itself.

    :param verbose: verbosity level
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.counters = SafetyCounters()

    def _on_step(self) -> bool:
        self.counters.update_from_infos(self.locals["infos"])
        return True

    def _on_rollout_end(self) -> None:
        record_safety(self.logger, self.counters)

    def _on_training_end(self) -> None:
        record_safety(self.logger, self.counters)
