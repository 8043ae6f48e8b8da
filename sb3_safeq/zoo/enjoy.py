"""
``sb3-safeq enjoy``: replay a model trained with ``sb3-safeq train`` (the options of ``python -m rl_zoo3.enjoy``)
inside its safe support, and report the return and the unsafe visits.

Models whose ``predict`` takes the safe support (``action_masks`` for Discrete actions: SafeSupportQ, MaskablePPO;
``safe_bounds`` for Box actions: SafeSupportQ) receive the support of the current observations, so they never leave
it; every other model acts on its own. Episodes are played whole: ``-n`` is the number of steps after which no new
episode starts.
"""

# Kept, not rl_zoo3.enjoy: it calls predict without the safe support and counts no cost; it has no hook to add them.

import argparse
import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from huggingface_sb3 import EnvironmentName
from rl_zoo3 import ALGOS, create_test_env, get_saved_hyperparams
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.utils import StoreDict, get_model_path
from stable_baselines3.common.callbacks import tqdm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv

from sb3_safeq import acting_without_support
from sb3_safeq.common.evaluation import SafeEvaluation, evaluate_safe_policy
from sb3_safeq.zoo.errors import ZooUsageError
from sb3_safeq.zoo.evaluation import predict_takes_support
from sb3_safeq.zoo.registration import register_algos
from sb3_safeq.zoo.train import DEFAULT_ALGO, DEFAULT_ENV, DEFAULT_NUM_THREADS, check_env_id, import_env_packages


def _parser(prog: str = "sb3-safeq enjoy", description: str | None = __doc__) -> argparse.ArgumentParser:
    """
    :param prog: the command's name, for the help and the messages
    :param description: the help's description
    :return: the parser of the options of ``python -m rl_zoo3.enjoy`` (``--num-threads`` defaults to one thread)
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--env", help="environment ID", type=EnvironmentName, default=DEFAULT_ENV)
    parser.add_argument("-f", "--folder", help="log folder (as given to train)", type=str, default="logs")
    parser.add_argument("--algo", help="RL algorithm", default=DEFAULT_ALGO, type=str, choices=list(ALGOS))
    parser.add_argument(
        "-n", "--n-timesteps", help="steps to play (whole episodes: none starts after)", default=1000, type=int
    )
    parser.add_argument(
        "--num-threads",
        help="number of threads for PyTorch (-1: torch's default)",
        default=DEFAULT_NUM_THREADS,
        type=int,
    )
    parser.add_argument("--n-envs", help="number of environments", default=1, type=int)
    parser.add_argument("--exp-id", help="experiment ID (0: latest, -1: no exp folder)", default=0, type=int)
    parser.add_argument("--verbose", help="verbose mode (0: summary only, 1: every episode)", default=1, type=int)
    parser.add_argument("--no-render", action="store_true", default=False, help="do not render the environment")
    parser.add_argument("--deterministic", action="store_true", default=False, help="use deterministic actions")
    parser.add_argument("--device", help="PyTorch device (cpu, cuda, ...)", default="auto", type=str)
    parser.add_argument("--load-best", action="store_true", default=False, help="load the best model (evaluation)")
    parser.add_argument("--load-checkpoint", type=int, help="load the checkpoint saved after this many steps")
    parser.add_argument("--load-last-checkpoint", action="store_true", default=False, help="load the last checkpoint")
    parser.add_argument("--stochastic", action="store_true", default=False, help="use stochastic actions")
    parser.add_argument(
        "--norm-reward", action="store_true", default=False, help="normalize the reward (trained with VecNormalize)"
    )
    parser.add_argument("--seed", help="random generator seed", type=int, default=0)
    parser.add_argument("--reward-log", help="where to log the episodes (Monitor files)", default="", type=str)
    parser.add_argument(
        "--gym-packages", type=str, nargs="+", default=[], help="modules to import that register environments"
    )
    parser.add_argument(
        "--env-kwargs", type=str, nargs="+", action=StoreDict, help="keyword arguments of the env constructor"
    )
    parser.add_argument(
        "--custom-objects",
        action="store_true",
        default=False,
        help="kept for rl-zoo3 compatibility: schedules are always replaced on loading",
    )
    parser.add_argument("-P", "--progress", action="store_true", default=False, help="display a progress bar")
    parser.add_argument(
        "--no-support",
        action="store_true",
        default=False,
        help="do not pass the safe support (action masks, safe bounds) to predict: the policy acts on its own",
    )
    return parser


def _env_kwargs(
    hyperparams: dict[str, Any], log_path: str, env_name: EnvironmentName, args: argparse.Namespace
) -> dict[str, Any]:
    """
    :return: the environment keyword arguments of training (hyperparameter file, then train's command line), updated
        with this command's ``--env-kwargs``; ``env_kwargs`` is removed from ``hyperparams``
    """
    env_kwargs = dict(hyperparams.pop("env_kwargs", None) or {})
    args_path = os.path.join(log_path, env_name, "args.yml")
    if os.path.isfile(args_path):
        with open(args_path) as file:
            train_args = yaml.load(file, Loader=yaml.UnsafeLoader)  # written by rl-zoo3 (argparse namespace)
        if train_args.get("env_kwargs") is not None:
            env_kwargs = train_args["env_kwargs"]
    env_kwargs.update(args.env_kwargs or {})
    return env_kwargs


def replay(
    model: Any,
    env: VecEnv,
    n_timesteps: int,
    deterministic: bool,
    use_masks: bool,
    render: bool = False,
    verbose: int = 1,
    progress: bool = False,
) -> SafeEvaluation:
    """
    Play whole episodes until ``n_timesteps`` steps have been played.

    :param model: the model
    :param env: the environment
    :param n_timesteps: steps after which no new episode starts
    :param deterministic: deterministic actions
    :param use_masks: pass the safe support of the current observations to ``model.predict``
    :param render: render the environment before each action
    :param verbose: 1: print every episode
    :param progress: show a progress bar
    :return: all episodes played
    """

    def predict(observations: Any, **kwargs: Any) -> tuple[np.ndarray, Any]:
        if render:
            env.render()
        if use_masks:
            return model.predict(observations, **kwargs)
        with acting_without_support():  # --no-support: the head is replayed on its own, on purpose
            return model.predict(observations, **kwargs)

    played = SafeEvaluation()
    progress_bar = tqdm(total=n_timesteps) if progress and tqdm is not None else None
    n_played = 0
    while n_played < n_timesteps:
        result = evaluate_safe_policy(
            model, env, env.num_envs, deterministic=deterministic, use_masks=use_masks, predict_fn=predict
        )
        if verbose >= 1:
            for episode in zip(result.episode_returns, result.episode_lengths, result.episode_costs, strict=True):
                print("Episode Reward: {:.2f}  Length: {}  Cost: {:.2f}".format(*episode))
        played.episode_returns += result.episode_returns
        played.episode_lengths += result.episode_lengths
        played.episode_costs += result.episode_costs
        played.unsafe_visits += result.unsafe_visits
        n_played += sum(result.episode_lengths)
        if progress_bar is not None:
            progress_bar.update(sum(result.episode_lengths))
    if progress_bar is not None:
        progress_bar.close()
    return played


@dataclass
class LoadedModel:
    """A trained model found the way rl-zoo3 finds it, with its test environment and how to act in it."""

    #: the model
    model: Any
    #: the test environment (rl-zoo3's ``create_test_env``, with the training's wrappers and normalisation)
    env: VecEnv
    #: deterministic actions
    deterministic: bool
    #: pass the safe support of the current observations to ``predict``
    use_masks: bool
    #: rl-zoo3's name of the model (``final-model-safeq-LavaGrid-v0``, ``best-model-...``), for file names
    name: str
    #: the run's folder (``logs/<algo>/<env>_<id>``)
    log_path: str


def load_trained_model(args: argparse.Namespace, render_mode: str | None = None) -> LoadedModel:
    """
    Find, load and set up a model trained with ``sb3-safeq train`` from parsed :func:`_parser` options.

    :param args: the parsed options
    :param render_mode: the environment's ``render_mode`` (``rgb_array`` to record a video); None: ``human`` unless
        ``--no-render``
    :return: the model, its test environment and how to act in it
    """
    import_env_packages(args.gym_packages)
    env_name: EnvironmentName = args.env
    check_env_id(env_name.gym_id)
    if args.n_timesteps < 1:
        raise ZooUsageError(f"-n/--n-timesteps={args.n_timesteps} must be >= 1.")
    try:
        name, model_path, log_path = get_model_path(
            args.exp_id,
            args.folder,
            args.algo,
            env_name,
            args.load_best,
            args.load_checkpoint,
            args.load_last_checkpoint,
        )
    except (AssertionError, ValueError) as error:
        raise ZooUsageError(
            f"no trained {args.algo} model for {env_name.gym_id} under {args.folder!r} ({error}). Train one with "
            f"`sb3-safeq train --algo {args.algo} --env {env_name.gym_id} -f {args.folder}`, or point -f/--folder "
            "and --exp-id at it."
        ) from error
    print(f"Loading {model_path}")

    set_random_seed(args.seed)
    if args.num_threads > 0:
        th.set_num_threads(args.num_threads)

    stats_path = os.path.join(log_path, env_name)
    hyperparams, maybe_stats_path = get_saved_hyperparams(stats_path, norm_reward=args.norm_reward, test_mode=True)
    env_kwargs = _env_kwargs(hyperparams, log_path, env_name, args)
    if render_mode is not None:
        env_kwargs["render_mode"] = render_mode
    elif not args.no_render:
        check_human_rendering(env_name.gym_id, env_kwargs)
    env = create_test_env(
        env_name.gym_id,
        n_envs=args.n_envs,
        stats_path=maybe_stats_path,
        seed=args.seed,
        log_dir=args.reward_log or None,
        should_render=not args.no_render,
        hyperparams=hyperparams,
        env_kwargs=env_kwargs,
        vec_env_cls=ExperimentManager.default_vec_env_cls,
    )

    algo_class = ALGOS[args.algo]
    load_kwargs: dict[str, Any] = {"seed": args.seed}
    if issubclass(algo_class, OffPolicyAlgorithm):
        load_kwargs["buffer_size"] = 1  # no replay memory is needed to act
        if "optimize_memory_usage" in hyperparams:
            load_kwargs["optimize_memory_usage"] = False
    # Schedules saved as closures may not unpickle under another Python; acting does not need them.
    custom_objects = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    model = algo_class.load(model_path, custom_objects=custom_objects, device=args.device, **load_kwargs)

    is_atari = ExperimentManager.is_atari(env_name.gym_id)
    is_minigrid = ExperimentManager.is_minigrid(env_name.gym_id)
    deterministic = not (args.stochastic or ((is_atari or is_minigrid) and not args.deterministic))
    use_masks = not args.no_support and predict_takes_support(model, env.action_space)
    return LoadedModel(model, env, deterministic, use_masks, name, log_path)


def check_human_rendering(env_id: str, env_kwargs: dict[str, Any]) -> None:
    """
    :param env_id: the environment id
    :param env_kwargs: its keyword arguments
    :raises ZooUsageError: when the environment cannot open a window (no ``human`` render mode, or gymnasium's
        pygame renderer not installed): one line naming ``--no-render``, ``record_video`` and the fix
    """
    if "render_mode" in env_kwargs:
        return
    render_modes = _metadata_render_modes(env_id)
    if "human" not in render_modes:
        raise ZooUsageError(
            f"{env_id} cannot be shown in a window (its render modes: {', '.join(render_modes) or 'none'}): pass "
            "--no-render, or record a video with `sb3-safeq record_video` (rgb_array frames)."
        )
    if importlib.util.find_spec("pygame") is None:
        raise ZooUsageError(
            f"showing {env_id} in a window needs pygame, which is not installed: install the 'render' extra "
            '(pip install "sb3-safeq[render]"), pass --no-render, or record a video with `sb3-safeq record_video`.'
        )


def _metadata_render_modes(env_id: str) -> list[str]:
    """:return: the ``render_modes`` of the environment class's metadata (without building the environment)"""
    entry_point = gym.spec(env_id).entry_point
    if callable(entry_point):
        env_class: Any = entry_point
    else:
        module_name, class_name = str(entry_point).split(":")
        env_class = getattr(importlib.import_module(module_name), class_name)
    return list(getattr(env_class, "metadata", {}).get("render_modes", []))


def enjoy(argv: list[str]) -> None:
    """
    Load a trained model, replay it and print the return, the episode length and the unsafe visits.

    :param argv: the arguments after ``enjoy``
    """
    # The --algo choices come from rl-zoo3's table, so register first; sb3_safeq registers the environment ids.
    register_algos()
    args = _parser().parse_args(argv)
    loaded = load_trained_model(args)
    try:
        played = replay(
            loaded.model,
            loaded.env,
            args.n_timesteps,
            deterministic=loaded.deterministic,
            use_masks=loaded.use_masks,
            render=not args.no_render,
            verbose=args.verbose,
            progress=args.progress,
        )
    finally:
        loaded.env.close()
    print_summary(played, loaded.use_masks)


def print_summary(played: SafeEvaluation, use_masks: bool) -> None:
    """
    Print what :func:`replay` played.

    :param played: the episodes
    :param use_masks: whether the safe support was passed to ``predict``
    """
    n_steps = sum(played.episode_lengths)
    support = "passed to predict" if use_masks else "not passed to predict"
    print(f"{len(played.episode_returns)} Episodes, {n_steps} steps, safe support {support}")
    print(f"Mean reward: {played.mean_return:.2f} +/- {played.std_return:.2f}")
    print(f"Mean episode length: {np.mean(played.episode_lengths):.2f} +/- {np.std(played.episode_lengths):.2f}")
    print(f"Unsafe visits: {played.unsafe_visits} (total cost {sum(played.episode_costs):.2f})")
