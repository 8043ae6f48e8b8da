"""
Behavior cloning of an estimated behavior (``SafeSupportQ(behavior="estimated")``) on an offline dataset, and the
supports it estimates for a dataset that has none. ``learn_offline`` runs it before the offline gradient steps.
"""

import dataclasses

import numpy as np
import torch as th
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import obs_as_tensor

from sb3_safeq.common.behaviors.estimated import EstimatedBehavior
from sb3_safeq.offline.transitions import AgentTransitions

#: Behavior-cloning steps of ``learn_offline`` when ``behavior_cloning_steps`` is None and the behavior is not fitted.
DEFAULT_BEHAVIOR_CLONING_STEPS = 2000
#: Observations per forward pass when estimating the supports of a whole dataset.
_ESTIMATION_CHUNK = 4096


def cloning_steps_to_run(behavior: EstimatedBehavior, requested: int | None) -> int:
    """
    :param behavior: the estimated behavior
    :param requested: ``learn_offline``'s ``behavior_cloning_steps``: None for the default (2,000 steps when the
        behavior is not fitted yet, none when it is, e.g. after ``load``), else an integer >= 0
    :return: the number of behavior-cloning steps to run
    :raises ValueError: for a negative or non-integer count, or 0 for a behavior never fitted
    """
    if requested is None:
        return 0 if behavior.fitted else DEFAULT_BEHAVIOR_CLONING_STEPS
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)) or requested < 0:
        raise ValueError(f"behavior_cloning_steps={requested!r} must be an integer >= 0 (or None for the default).")
    if requested == 0 and not behavior.fitted:
        raise ValueError(
            'behavior_cloning_steps=0, but the estimated behavior was never fitted: behavior="estimated" learns beta '
            f"from the dataset first. Leave behavior_cloning_steps=None ({DEFAULT_BEHAVIOR_CLONING_STEPS} steps) or "
            "give a positive number."
        )
    return int(requested)


def fit_behavior(
    behavior: EstimatedBehavior,
    data: AgentTransitions,
    n_steps: int,
    logger: Logger,
    log_interval: int | None,
    dump_step: int = 0,
) -> float:
    """
    Fit the behavior to the dataset's (observation, action) pairs by maximum likelihood, on minibatches drawn with
    numpy's global generator (seeded by the model's ``seed``).

    Logs ``offline/bc_loss`` (the mean loss since the last dump), ``offline/bc_steps`` and, at the end,
    ``offline/estimated_support_size`` (the mean size of the estimated supports of the dataset's observations).

    :param behavior: the estimated behavior (its network and optimizer)
    :param data: the validated transitions, agent units (supports may be None)
    :param n_steps: gradient steps of behavior cloning (>= 1)
    :param logger: the model's logger
    :param log_interval: dump the logs every so many steps (None: only at the end)
    :param dump_step: the step the logs are dumped at (the model's ``num_timesteps``: cloning takes none)
    :return: the mean loss of the last ``min(n_steps, 100)`` steps
    """
    device = behavior.device
    n_transitions = len(data)
    batch_size = min(behavior.batch_size, n_transitions)
    behavior.network.train()
    losses: list[th.Tensor] = []
    window: list[th.Tensor] = []
    for step in range(1, n_steps + 1):
        rows = np.random.randint(0, n_transitions, size=batch_size)
        observations = obs_as_tensor(data.observations[rows], device)
        actions = th.as_tensor(data.actions[rows], device=device)
        supports = None if data.supports is None else th.as_tensor(data.supports[rows], device=device)
        loss = behavior.cloning_loss(observations, actions, supports)
        behavior.optimizer.zero_grad()
        loss.backward()
        behavior.optimizer.step()
        losses.append(loss.detach())
        window.append(loss.detach())
        if (log_interval is not None and step % log_interval == 0) or step == n_steps:
            logger.record("offline/bc_loss", float(th.stack(window).mean()))
            logger.record("offline/bc_steps", step)
            window = []
            if step < n_steps:
                logger.dump(step=dump_step)
    behavior.network.eval()
    behavior.mark_fitted()
    with th.no_grad():
        sizes = [
            behavior.support_size(chunk) for chunk in _estimated_chunks(behavior, data.observations, data.supports)
        ]
    logger.record("offline/estimated_support_size", float(th.stack(sizes).mean()))
    logger.dump(step=dump_step)
    return float(th.stack(losses[-100:]).mean())


def _estimated_chunks(
    behavior: EstimatedBehavior, observations: np.ndarray, supports: np.ndarray | None
) -> list[th.Tensor]:
    """:return: the supports :meth:`EstimatedBehavior.estimate_supports` gives, in chunks (agent units, tensors)"""
    chunks = []
    for start in range(0, len(observations), _ESTIMATION_CHUNK):
        rows = slice(start, start + _ESTIMATION_CHUNK)
        stored = None if supports is None else th.as_tensor(supports[rows], device=behavior.device)
        chunks.append(behavior.estimate_supports(obs_as_tensor(observations[rows], behavior.device), stored))
    return chunks


def with_estimated_supports(behavior: EstimatedBehavior, data: AgentTransitions) -> AgentTransitions:
    """
    :param behavior: a fitted estimated behavior
    :param data: transitions without supports
    :return: the same transitions with the estimated supports of their observations and next observations (agent
        units, as the replay buffer stores supports)
    """
    behavior.check_fitted()
    with th.no_grad():
        supports, next_supports = (
            th.cat(_estimated_chunks(behavior, observations, None)).cpu().numpy()
            for observations in (data.observations, data.next_observations)
        )
    return dataclasses.replace(data, supports=supports, next_supports=next_supports)
