"""
The KL-regularized (soft) Bellman backup of Safe-Support Q-Learning, shared by the support kinds.

With temperature ``alpha > 0`` and behavior policy ``beta``::

    V(s)        = alpha * log E_{a ~ beta(.|s)} exp(Q(s, a) / alpha)
    pi_Q(a|s)   ∝ beta(a|s) exp(Q(s, a) / alpha)

- over a finite action set (masks) ``V`` is exact, a log-sum-exp with ``log beta`` (``-inf`` outside the safe
  support): :func:`soft_value`, :func:`soft_bellman_target`, and ``pi_Q`` a masked softmax (:func:`induced_logits`);
- over continuous actions (boxes) it is estimated from ``N`` draws ``a_i ~ beta(.|s)`` as a log-mean-exp
  (:func:`sampled_soft_value`; slightly pessimistic for finite ``N``), and ``pi_Q`` is sampled by reweighting the
  draws with ``softmax(Q / alpha)``.

Both only ever put weight on safe actions.
"""

import math

import torch as th


def soft_value(q_values: th.Tensor, log_behavior: th.Tensor, alpha: float) -> th.Tensor:
    """
    Soft state value ``alpha * log E_{a~beta}[exp(Q(s, a) / alpha)]`` over the last dimension.

    It is computed around the behavior mean ``c = E_beta[Q]`` as ``c + alpha * log E_beta[exp((Q - c) / alpha)]``,
    which keeps both limits exact in float32:

    - when some ``|Q - c| / alpha`` in the batch exceeds 1 (small ``alpha``), with a stable log-sum-exp: it tends
      to the masked max, and its rounding error (float32 resolution times ``alpha``) stays below the resolution of
      the Q-values themselves;
    - otherwise (large ``alpha``) as ``log1p(E_beta[expm1((Q - c) / alpha)])``: a log-sum-exp near zero would lose
      everything below float32 resolution, which ``alpha`` then multiplies; this form tends to ``E_beta[Q]``
      (expected SARSA) with full relative precision.

    The form is chosen once for the whole batch. On a CPU the condition is read directly (there is no device to
    wait for) and only the chosen form is computed; on an accelerator both are computed and a 0-d condition selects
    one on the device, so the batch never goes to the host (this runs in every gradient step; there a host
    synchronisation would stall it). Both paths give the same values, bit for bit.

    (A single form around the largest safe Q-value, ``m + alpha * log1p(E_beta[expm1((Q - m) / alpha)])``, is as
    exact in both limits and cheaper still, but it rounds differently: every critic's trajectory would change, and
    with it the benchmark's rows. On cart-pole it reached 500 on 10 of 15 seeds where this form does on 14:
    benchmarks/studies/soft_value_form.)

    :param q_values: Q-values, shape ``(..., n_actions)``
    :param log_behavior: log-probabilities of the behavior policy, ``-inf`` outside the support,
        same shape as ``q_values``
    :param alpha: temperature, > 0
    :return: soft values, shape ``(...)``; ``-inf`` for rows whose support is empty
    """
    behavior_probs = log_behavior.exp()
    outside_support = behavior_probs == 0
    # Actions outside the support have probability 0; their Q-values may be arbitrary and must not leak in.
    behavior_mean = (behavior_probs * q_values.masked_fill(outside_support, 0.0)).sum(dim=-1, keepdim=True)
    scaled = (q_values - behavior_mean).masked_fill(outside_support, 0.0) / alpha
    log_expectation = log_expectation_around_mean(
        scaled, behavior_probs, log_behavior, select_on_device=scaled.device.type != "cpu"
    )
    values = behavior_mean.squeeze(-1) + alpha * log_expectation
    return values.masked_fill(outside_support.all(dim=-1), -th.inf)


def log_expectation_around_mean(
    scaled: th.Tensor, behavior_probs: th.Tensor, log_behavior: th.Tensor, select_on_device: bool
) -> th.Tensor:
    """
    ``log E_beta[exp(scaled)]`` for ``scaled = (Q - E_beta[Q]) / alpha`` (0 outside the support), in the form that
    is exact for the batch: ``log1p(E_beta[expm1(scaled)])`` when every ``|scaled| <= 1``, else a log-sum-exp.

    :param scaled: centred, scaled Q-values, shape ``(..., n_actions)``
    :param behavior_probs: behavior probabilities (0 outside the support), same shape
    :param log_behavior: their logarithms (``-inf`` outside the support), same shape
    :param select_on_device: compute both forms and select one with a 0-d condition on the device (no host
        synchronisation: for accelerators), instead of reading the condition and computing one form (for CPUs); both
        give the same values, bit for bit
    :return: shape ``(...)``
    """
    near_mean = scaled.abs().amax() <= 1.0
    if not select_on_device:
        if bool(near_mean):
            return th.log1p((behavior_probs * th.expm1(scaled)).sum(dim=-1))
        return th.logsumexp(log_behavior + scaled, dim=-1)
    # Clamped so that the unselected form cannot overflow: a no-op when it is the selected one, which is why the
    # path above, where the clamp is never needed, gives the same values.
    expm1_form = th.log1p((behavior_probs * th.expm1(scaled.clamp(-1.0, 1.0))).sum(dim=-1))
    logsumexp_form = th.logsumexp(log_behavior + scaled, dim=-1)
    return th.where(near_mean, expm1_form, logsumexp_form)


def induced_logits(q_values: th.Tensor, log_behavior: th.Tensor, alpha: float) -> th.Tensor:
    """
    Unnormalised log-probabilities of the induced policy ``pi_Q ∝ beta * exp(Q / alpha)``.

    :param q_values: Q-values, shape ``(..., n_actions)``
    :param log_behavior: log-probabilities of the behavior policy (``-inf`` outside the support)
    :param alpha: temperature, > 0
    :return: logits, ``-inf`` outside the support
    """
    return log_behavior + q_values / alpha


def induced_log_probs(q_values: th.Tensor, log_behavior: th.Tensor, alpha: float) -> th.Tensor:
    """
    Normalised log-probabilities of the induced policy ``pi_Q``.

    :param q_values: Q-values, shape ``(..., n_actions)``
    :param log_behavior: log-probabilities of the behavior policy (``-inf`` outside the support)
    :param alpha: temperature, > 0
    :return: log-probabilities, ``-inf`` outside the support
    """
    return th.log_softmax(induced_logits(q_values, log_behavior, alpha), dim=-1)


def soft_bellman_target(
    rewards: th.Tensor,
    dones: th.Tensor,
    next_q_values: th.Tensor,
    next_log_behavior: th.Tensor,
    alpha: float,
    gamma: float,
) -> th.Tensor:
    """
    Target ``y = r + gamma * (1 - terminated) * V(s')`` of the KL-regularized Bellman operator.

    :param rewards: rewards, shape ``(batch, 1)``
    :param dones: 1.0 where the episode *terminated* (time-limit truncations must already be 0), shape ``(batch, 1)``
    :param next_q_values: target-network Q-values of the next observations, shape ``(batch, n_actions)``
    :param next_log_behavior: behavior log-probabilities at the next observations, shape ``(batch, n_actions)``
    :param alpha: temperature, > 0
    :param gamma: discount factor
    :return: targets, shape ``(batch, 1)``
    """
    next_values = soft_value(next_q_values, next_log_behavior, alpha).unsqueeze(-1)
    # A terminal state may have no safe action (its value is then -inf); it is never bootstrapped from,
    # so select instead of multiplying (0 * -inf would be NaN).
    next_values = th.where(dones > 0, 0.0, next_values)
    return rewards + gamma * next_values


def sampled_soft_value(q_values: th.Tensor, alpha: float) -> th.Tensor:
    """
    Soft state value ``alpha * log mean_i exp(Q(s, a_i) / alpha)`` from ``N`` draws ``a_i ~ beta(.|s)``.

    :param q_values: Q-values of the draws, shape ``(batch, n_samples)``
    :param alpha: temperature, > 0
    :return: soft values, shape ``(batch, 1)``
    """
    return alpha * (th.logsumexp(q_values / alpha, dim=1, keepdim=True) - math.log(q_values.shape[1]))
