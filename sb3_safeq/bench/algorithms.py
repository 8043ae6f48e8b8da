"""
The algorithms of the benchmark, their hyperparameters (read from the packaged rl-zoo3 files) and how to build them.

A variant is an :class:`AlgoSpec` with a new name, the hyperparameter file of its base algorithm and extra keyword
arguments, e.g. ``register_algo(AlgoSpec("safeq_induced", "safeq", "discrete", extra_kwargs={"exploration":
"induced"}))``.
"""

import importlib
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from sb3_safeq import SafetyWrapper, make_support_kind
from sb3_safeq.bench.errors import BenchConfigError
from sb3_safeq.bench.hyperparams import HyperparamSources, load_hyperparams, step_budget

#: Action-space kinds an algorithm can run on: Discrete actions, Box actions (whatever their safe set: a box or a
#: polytope), Box actions whose safe set is a polytope (``ConstrainedBox``), or any.
DISCRETE, BOX, CONSTRAINED, ANY = "discrete", "box", "constrained", "any"
#: The support kinds (``SupportKind.name``) of the environments each action-space kind runs on.
SUPPORT_KIND_OF = {DISCRETE: ("mask",), BOX: ("box", "polytope"), CONSTRAINED: ("polytope",)}


@dataclass(frozen=True)
class AlgoSpec:
    """
    One algorithm of the benchmark.

    :param name: the name in the ``algo`` column and on the command line
    :param hyperparams: the hyperparameter file to read (``hyperparams/<hyperparams>.yml``); None: no training
    :param action_kind: ``"discrete"``, ``"box"``, ``"constrained"`` or ``"any"``: the environments it runs on
    :param class_path: ``"module:Class"`` of the algorithm (None for the behavior policy)
    :param shield: train and evaluate behind ``SafetyWrapper(shield=True)``
    :param use_support: pass the safe support (masks / boxes) to ``predict`` at evaluation
    :param extra_kwargs: constructor arguments added to (and overriding) the hyperparameter file's
    :param env_kwargs: keyword arguments of ``gym.make`` for its environments (e.g. ``{"support": "box"}``: the
        constrained environments' largest inner box instead of their polytope)
    """

    name: str
    hyperparams: str | None
    action_kind: str
    class_path: str | None = None
    shield: bool = False
    use_support: bool = False
    extra_kwargs: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def runs_on(self, action_space: spaces.Space) -> bool:
        """
        :param action_space: the environment's action space
        :return: whether the algorithm runs on it
        """
        if self.action_kind == ANY:
            return True
        return make_support_kind(action_space).name in SUPPORT_KIND_OF[self.action_kind]

    def load_class(self) -> type:
        """:return: the algorithm class"""
        if self.class_path is None:
            raise BenchConfigError(f"The algorithm {self.name!r} has no class (it is not trained).")
        module_name, class_name = self.class_path.split(":")
        return getattr(importlib.import_module(module_name), class_name)


#: The registered algorithms, by name.
ALGORITHMS: dict[str, AlgoSpec] = {}


def register_algo(spec: AlgoSpec) -> AlgoSpec:
    """
    Add an algorithm (or a variant of one) to the benchmark.

    :param spec: the algorithm
    :return: the same spec
    """
    ALGORITHMS[spec.name] = spec
    return spec


for _spec in (
    AlgoSpec("safeq", "safeq", ANY, "sb3_safeq:SafeSupportQ", use_support=True),
    # Not trained; its file gives the budget (the run key) and the behavior policy of safeq's entry.
    AlgoSpec("behavior", "safeq", ANY, use_support=True),
    AlgoSpec("dqn", "dqn", DISCRETE, "stable_baselines3:DQN"),
    AlgoSpec("dqn_shield", "dqn", DISCRETE, "stable_baselines3:DQN", shield=True),
    AlgoSpec("qrdqn", "qrdqn", DISCRETE, "sb3_contrib:QRDQN"),
    AlgoSpec("ppo_mask", "ppo_mask", DISCRETE, "sb3_contrib:MaskablePPO", use_support=True),
    AlgoSpec("sac", "sac", BOX, "stable_baselines3:SAC"),
    AlgoSpec("sac_shield", "sac", BOX, "stable_baselines3:SAC", shield=True),
    AlgoSpec("tqc", "tqc", BOX, "sb3_contrib:TQC"),
):
    register_algo(_spec)

#: The algorithms a benchmark runs when ``--algos`` is not given.
DEFAULT_ALGOS: tuple[str, ...] = tuple(ALGORITHMS)

# SafeSupportQ variants (run them by name, e.g. ``--algos safeq safeq_forward_kl``): the extraction (E1 forward KL is
# SafeSupportQ's default, E2 reverse KL what safeq.yml sets for the Box tasks), who collects the data (beta as in the
# paper, or pi_Q with the same support), the critic's loss (Huber, the default before MSE) and the temperature (the
# default is 0.05; an entry of safeq.yml may set its own, which the alpha variants override).
SAFEQ_VARIANTS: dict[str, dict[str, Any]] = {
    "safeq_forward_kl": {"extraction": "forward_kl"},
    "safeq_reverse_kl": {"extraction": "reverse_kl"},
    "safeq_explore_behavior": {"exploration": "behavior"},
    "safeq_explore_induced": {"exploration": "induced"},
    "safeq_huber": {"loss": "huber"},
    "safeq_alpha0.01": {"alpha": 0.01},
    "safeq_alpha0.2": {"alpha": 0.2},
    "safeq_alpha1": {"alpha": 1.0},
    "safeq_tau0.02": {"tau": 0.02},
    # The extraction head trained at every gradient step (the Discrete default trains it every fourth one).
    "safeq_head_every_step": {"actor_update_interval": 1},
}
for _name, _kwargs in SAFEQ_VARIANTS.items():
    register_algo(AlgoSpec(_name, "safeq", ANY, "sb3_safeq:SafeSupportQ", use_support=True, extra_kwargs=_kwargs))

# Baseline variants, to compare with a SafeSupportQ variant at the same setting (e.g. the target network's update
# rate, which bounds how far values have propagated at a given budget): name -> (registered algorithm, arguments).
BASELINE_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "sac_tau0.02": ("sac", {"tau": 0.02}),
    "sac_shield_tau0.02": ("sac_shield", {"tau": 0.02}),
}
for _name, (_base, _kwargs) in BASELINE_VARIANTS.items():
    register_algo(replace(ALGORITHMS[_base], name=_name, extra_kwargs=_kwargs))

# On the constrained environments (a polytope of safe actions per state, from control barrier functions): SafeSupportQ
# with the largest box inside each polytope as its support, on the same dynamics (the environment's support="box").
# SAC and SAC behind the SafetyWrapper's shield (for a polytope: the Euclidean projection onto it, a CBF-QP safety
# filter) run there as registered above.
register_algo(
    AlgoSpec(
        "safeq_inner_box",
        "safeq",
        CONSTRAINED,
        "sb3_safeq:SafeSupportQ",
        use_support=True,
        env_kwargs={"support": "box"},
    )
)


def get_algo(name: str) -> AlgoSpec:
    """
    :param name: a registered algorithm's name, or ``"module:attribute"`` naming an :class:`AlgoSpec` of the user's
        (the module is imported; registering the spec is not needed)
    :return: its spec
    """
    if ":" in name:
        return _spec_by_import_path(name)
    if name not in ALGORITHMS:
        raise BenchConfigError(
            f"Unknown algorithm {name!r}: choose among {', '.join(ALGORITHMS)}; register your own with "
            "--algo-module MODULE (a module that calls register_algo) or name it as --algos MODULE:SPEC."
        )
    return ALGORITHMS[name]


def _spec_by_import_path(path: str) -> AlgoSpec:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise BenchConfigError(
            f"--algos {path}: cannot import {module_name!r} ({type(error).__name__}: {error}); install it, or add the "
            "folder that holds it to PYTHONPATH."
        ) from error
    spec = getattr(module, attribute, None)
    if not isinstance(spec, AlgoSpec):
        raise BenchConfigError(
            f"--algos {path}: {module_name}.{attribute} must be an AlgoSpec (sb3_safeq.bench.algorithms.AlgoSpec), "
            f"got {type(spec).__name__}."
        )
    return spec


class BehaviorAgent:
    """
    The behavior policy alone, as a model: by default uniform over the safe mask (Discrete) or in the safe box (Box);
    any other behavior SafeSupportQ accepts (``behavior=`` of its hyperparameter file) is acted out as given.

    :param action_space: the environment's action space
    :param seed: random seed
    :param behavior: the behavior policy, as ``SafeSupportQ(behavior=...)`` takes it
    """

    def __init__(self, action_space: spaces.Space, seed: int = 0, behavior: Any = "uniform") -> None:
        self.action_space = action_space
        self.support_kind = make_support_kind(action_space)
        self.rng = np.random.default_rng(seed)
        # The uniform one keeps its own seeded numpy draws; the others draw with torch, seeded here.
        self.behavior = (
            None if isinstance(behavior, str) and behavior == "uniform" else self.support_kind.make_behavior(behavior)
        )
        if self.behavior is not None:
            th.manual_seed(seed)

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
        safe_bounds: tuple[np.ndarray, np.ndarray] | None = None,
        safe_constraints: Any = None,
    ) -> tuple[np.ndarray, None]:
        """
        Draw actions from the behavior policy (always stochastic: it is the behavior's nature).

        :param observation: the observations (batched)
        :param state: unused
        :param episode_start: unused
        :param deterministic: unused
        :param action_masks: Discrete actions: the safe masks, shape ``(n_envs, n_actions)``
        :param safe_bounds: Box actions: ``(low, high)``, each of shape ``(n_envs, action_dim)``
        :param safe_constraints: ``ConstrainedBox`` actions: one ``(A, b)`` per environment
        :return: the actions and None
        """
        kind = self.support_kind
        supports = kind.pick_predict_argument(
            action_masks=action_masks, safe_bounds=safe_bounds, safe_constraints=safe_constraints
        )
        if supports is None:
            raise ValueError(f"The behavior policy needs the safe supports ({kind.predict_keyword}=).")
        observations = _as_batch_tensor(observation)
        n_obs = next(iter(observations.values())).shape[0] if isinstance(observations, dict) else len(observations)
        raw_supports, _ = kind.predict_supports(supports, n_obs)
        if self.behavior is not None:
            actions = self.behavior.act(observations, raw_supports)
        else:
            actions = kind.sample_uniform(raw_supports, self.rng)
        return np.asarray(actions, dtype=self.action_space.dtype), None


def _as_batch_tensor(observation: Any) -> Any:
    # Behavior policies take observations as the replay buffer stores them: batched, unpreprocessed tensors.
    if isinstance(observation, dict):
        return {key: th.as_tensor(np.asarray(value)) for key, value in observation.items()}
    return th.as_tensor(np.asarray(observation))


def current_supports(env: VecEnv) -> dict[str, Any]:
    """
    :param env: a VecEnv whose sub-environments expose their safe support
    :return: the ``predict`` keyword giving the supports of the current observations
    """
    return make_support_kind(env.action_space).current_predict_kwargs(env)


def env_action_space(env_id: str) -> spaces.Space:
    """
    :param env_id: a gymnasium environment id
    :return: its action space (after checking that the environment exposes its safe support)
    """
    if env_id not in gym.envs.registry:
        safe = sorted(name for name in gym.envs.registry if name.startswith("Safe"))
        raise BenchConfigError(
            f"Unknown environment {env_id!r}: if it is your own, pass the package that registers it with "
            f"--gym-packages (e.g. --gym-packages my_envs); the bundled safe environments are: {', '.join(safe)}."
        )

    env = gym.make(env_id)
    try:
        SafetyWrapper(env).reset(seed=0)  # the benchmark needs the safe support (and checks it here, not in a worker)
    except Exception as error:
        raise BenchConfigError(f"{env_id} cannot be benchmarked: {error}") from error
    finally:
        env.close()
    return env.action_space


__all__ = [
    "ALGORITHMS",
    "ANY",
    "BOX",
    "DEFAULT_ALGOS",
    "DISCRETE",
    "AlgoSpec",
    "BehaviorAgent",
    "BenchConfigError",
    "HyperparamSources",
    "current_supports",
    "env_action_space",
    "get_algo",
    "load_hyperparams",
    "register_algo",
    "step_budget",
]
