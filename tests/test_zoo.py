"""
The rl-zoo3 entry points (``python -m sb3_safeq.zoo`` and the ``sb3-safeq`` script), run as subprocesses: importing
rl-zoo3 patches gymnasium's ``TimeLimit``, which must not leak into the other tests of a pytest worker.
"""

import csv
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

import sb3_safeq.zoo.hyperparams_opt as hyperparams_opt
from sb3_safeq import SafeSupportQ, SafetyWrapper
from sb3_safeq.envs import SAFE_DISCRETE_ENV_IDS
from sb3_safeq.zoo.config import HYPERPARAMS_DIR, MissingEntryError, read_env_hyperparams
from sb3_safeq.zoo.train import prepare_arguments
from tests.toy_envs import RandomMaskEnv

# Small budgets: every run below trains for a few hundred steps.
FAST = ["--num-threads", "1", "--seed", "0", "-f", "logs"]
SAFETY_COLUMNS = ["episode_cost", "episode_unsafe_visits"]


def run_cli(*args: str, cwd: Path, command: list[str] | None = None) -> subprocess.CompletedProcess:
    """
    Run ``python -m sb3_safeq.zoo <args>`` (or ``command``) in ``cwd`` with one torch thread.

    :return: the finished process, output captured as text
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    command = command or [sys.executable, "-m", "sb3_safeq.zoo"]
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit code {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def read_monitor(run_dir: Path) -> list[dict[str, str]]:
    """:return: the episodes of every ``*.monitor.csv`` of a run (the first line of each file is a JSON header)"""
    rows: list[dict[str, str]] = []
    files = sorted(run_dir.glob("*.monitor.csv"))
    assert files, f"no monitor file in {run_dir}"
    for path in files:
        with path.open() as file:
            next(file)
            reader = csv.DictReader(file)
            assert reader.fieldnames is not None and set(SAFETY_COLUMNS) <= set(reader.fieldnames), reader.fieldnames
            rows += list(reader)
    return rows


def unsafe_visits(rows: list[dict[str, str]]) -> int:
    return sum(int(row["episode_unsafe_visits"]) for row in rows)


def test_safeq_train_enjoy_and_rl_zoo_plots(tmp_path: Path) -> None:
    result = run_cli(
        "train", "--algo", "safeq", "--env", "SafeCliffWalking-v0", "-n", "600", "--eval-freq", "300",
        "--eval-episodes", "2", "-params", "learning_starts:100", *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert_ok(result)
    run_dir = tmp_path / "logs" / "safeq" / "SafeCliffWalking-v0_1"
    assert (run_dir / "SafeCliffWalking-v0.zip").is_file()
    assert (run_dir / "best_model.zip").is_file()
    # The packaged hyperparameters were used, with the command-line override.
    config = yaml.load((run_dir / "SafeCliffWalking-v0" / "config.yml").read_text(), Loader=yaml.UnsafeLoader)
    assert config["env_wrapper"] == "sb3_safeq.zoo.wrappers.safety_wrapper"
    assert config["learning_starts"] == 100
    rows = read_monitor(run_dir)
    assert sum(int(row["l"]) for row in rows) <= 600 and len(rows) >= 5
    assert unsafe_visits(rows) == 0
    evaluations = np.load(run_dir / "evaluations.npz")
    assert list(evaluations["timesteps"]) == [300, 600]

    enjoyed = run_cli("enjoy", "--algo", "safeq", "--env", "SafeCliffWalking-v0", "-f", "logs", "--no-render",
                      "-n", "300", cwd=tmp_path)  # fmt: skip
    assert_ok(enjoyed)
    assert "safe support passed to predict" in enjoyed.stdout
    assert "Unsafe visits: 0 (total cost 0.00)" in enjoyed.stdout
    assert "Mean reward:" in enjoyed.stdout

    # rl-zoo3's own plot scripts read the same logs.
    plot = run_cli("plot_train", "-a", "safeq", "-e", "SafeCliffWalking-v0", "-f", "logs", "-w", "2", cwd=tmp_path,
                   command=[sys.executable, "-m", "rl_zoo3.cli"])  # fmt: skip
    assert_ok(plot)
    assert "No data available" not in plot.stdout
    all_plots = run_cli("all_plots", "-a", "safeq", "-e", "SafeCliffWalking-v0", "-f", "logs", "--no-display",
                        "-o", "summary", cwd=tmp_path, command=[sys.executable, "-m", "rl_zoo3.cli"])  # fmt: skip
    assert_ok(all_plots)
    with (tmp_path / "summary.pkl").open("rb") as file:
        summary = pickle.load(file)
    curve = summary["SafeCliffWalking-v0"]["SAFEQ-logs"]
    assert list(curve["timesteps"]) == [300, 600]


def test_ppo_mask_train_and_enjoy_with_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "sb3-safeq"
    assert script.is_file(), "the sb3-safeq console script is missing: reinstall the package (pip install -e .)"
    result = run_cli("train", "--algo", "ppo_mask", "--env", "SafeCliffWalking-v0", "-n", "512", "--eval-freq", "-1",
                     "-params", "n_steps:64", *FAST, cwd=tmp_path, command=[str(script)])  # fmt: skip
    assert_ok(result)
    run_dir = tmp_path / "logs" / "ppo_mask" / "SafeCliffWalking-v0_1"
    assert (run_dir / "SafeCliffWalking-v0.zip").is_file()
    rows = read_monitor(run_dir)
    assert len(list(run_dir.glob("*.monitor.csv"))) == 4  # n_envs: 4 in ppo_mask.yml
    assert rows and unsafe_visits(rows) == 0  # MaskablePPO acts inside the same masks

    enjoyed = run_cli("enjoy", "--algo", "ppo_mask", "--env", "SafeCliffWalking-v0", "-f", "logs", "--no-render",
                      "-n", "100", cwd=tmp_path, command=[str(script)])  # fmt: skip
    assert_ok(enjoyed)
    assert "safe support passed to predict" in enjoyed.stdout
    assert "Unsafe visits: 0" in enjoyed.stdout


@pytest.mark.parametrize("shielded", [False, True])
def test_unshielded_dqn_pays_in_unsafe_visits_and_the_shield_prevents_them(tmp_path: Path, shielded: bool) -> None:
    # 1000 steps of warm-up: DQN acts uniformly over all actions, as its epsilon-greedy exploration does.
    override = ["env_wrapper:'sb3_safeq.zoo.wrappers.shielded_safety_wrapper'"] if shielded else []
    result = run_cli("train", "--algo", "dqn", "--env", "SafeCliffWalking-v0", "-n", "1000", "--eval-freq", "-1",
                     "-params", "learning_starts:1000", *override, *FAST, cwd=tmp_path)  # fmt: skip
    assert_ok(result)
    rows = read_monitor(tmp_path / "logs" / "dqn" / "SafeCliffWalking-v0_1")
    if shielded:
        assert unsafe_visits(rows) == 0
    else:
        assert unsafe_visits(rows) > 10
        assert sum(float(row["episode_cost"]) for row in rows) > 10


def test_sac_baseline_on_a_continuous_env_records_costs(tmp_path: Path) -> None:
    result = run_cli("train", "--algo", "sac", "--env", "SafePointMass-v0", "-n", "300", "--eval-freq", "-1",
                     "-params", "learning_starts:100", "batch_size:32", *FAST, cwd=tmp_path)  # fmt: skip
    assert_ok(result)
    run_dir = tmp_path / "logs" / "sac" / "SafePointMass-v0_1"
    assert (run_dir / "SafePointMass-v0.zip").is_file()
    read_monitor(run_dir)  # has the safety columns


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--env", "SafeCliffWalkin-v0"], "unknown environment 'SafeCliffWalkin-v0'"),
        (["--algo", "sarsa", "--env", "SafeCliffWalking-v0"], "unknown algorithm 'sarsa'"),
        (["--env", "SafeCliffWalking-v0", "--conf-file", "malformed.yml"], "is not valid YAML"),
        (["--env", "SafeCliffWalking-v0", "--conf-file", "typo.yml"], "unknown hyperparameter 'alpah'"),
        (["--env", "SafeCliffWalking-v0", "--conf-file", "missing.yml"], "missing.yml does not exist"),
        (["--env", "CartPole-v1"], "has no entry for CartPole-v1"),
    ],
)
def test_bad_options_fail_with_a_clear_message(tmp_path: Path, arguments: list[str], message: str) -> None:
    (tmp_path / "malformed.yml").write_text("SafeCliffWalking-v0:\n  n_timesteps: [1, 2\n  policy: MlpPolicy\n")
    (tmp_path / "typo.yml").write_text("SafeCliffWalking-v0:\n  n_timesteps: 100\n  policy: MlpPolicy\n  alpah: 0.1\n")
    result = run_cli("train", *arguments, *FAST, cwd=tmp_path)
    assert result.returncode == 2
    assert "sb3-safeq train: error:" in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing was started


@pytest.mark.parametrize(
    ("algo", "env_id", "reference"),
    [("dqn", "CartPole-v1", "SafeCliffWalking-v0"), ("safeq", "Pendulum-v1", "SafePointMass-v0")],
)
def test_a_missing_entry_comes_with_an_entry_to_copy_that_works(
    tmp_path: Path, algo: str, env_id: str, reference: str
) -> None:
    with pytest.raises(MissingEntryError, match=f"has no entry for {env_id}") as error:
        prepare_arguments(["--algo", algo, "--env", env_id])
    message = str(error.value)
    assert f"the entry of {reference}" in message
    template = message.split("): ", 1)[1]
    conf_file = tmp_path / "mine.yml"
    conf_file.write_text(template + "\n")
    copied = read_env_hyperparams(conf_file, env_id)  # valid YAML with an entry for the environment
    assert copied is not None
    packaged = read_env_hyperparams(HYPERPARAMS_DIR / f"{algo}.yml", reference)
    assert packaged is not None
    # The reference's settings, without the wrapper the experiment manager adds where the environment has a support.
    assert copied == {key: value for key, value in packaged.items() if key not in ("env_wrapper", "monitor_kwargs")}
    prepare_arguments(["--algo", algo, "--env", env_id, "--conf-file", str(conf_file)])  # accepted as it is


def test_enjoy_without_a_trained_model_fails_with_a_clear_message(tmp_path: Path) -> None:
    result = run_cli("enjoy", "--algo", "safeq", "--env", "SafeCartPole-v0", "-f", "logs", "--no-render", cwd=tmp_path)
    assert result.returncode == 2
    assert "no trained safeq model for SafeCartPole-v0" in result.stderr
    assert "Traceback" not in result.stderr


def test_packaged_hyperparameters_cover_every_bundled_env() -> None:
    safeq = yaml.safe_load((HYPERPARAMS_DIR / "safeq.yml").read_text())
    assert set(SAFE_DISCRETE_ENV_IDS) <= set(safeq)
    for algo in ("dqn", "qrdqn", "ppo_mask"):
        assert set(yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text())) == set(SAFE_DISCRETE_ENV_IDS)
    for algo in ("safeq", "dqn", "qrdqn", "sac", "tqc", "ppo_mask"):
        for env_id, entry in yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text()).items():
            assert entry["env_wrapper"] == "sb3_safeq.zoo.wrappers.safety_wrapper", (algo, env_id)
            assert eval(entry["monitor_kwargs"]) == {"info_keywords": tuple(SAFETY_COLUMNS)}, (algo, env_id)


def test_importing_the_package_leaves_rl_zoo3_alone() -> None:
    code = (
        "import sys\n"
        "import sb3_safeq, sb3_safeq.zoo, sb3_safeq.zoo.cli, sb3_safeq.zoo.config, sb3_safeq.zoo.evaluation\n"
        "import sb3_safeq.zoo.hyperparams_opt, sb3_safeq.zoo.wrappers\n"
        "assert 'rl_zoo3' not in sys.modules, 'rl_zoo3 was imported'\n"
        "import rl_zoo3, rl_zoo3.hyperparams_opt as opt\n"
        "assert 'safeq' not in rl_zoo3.ALGOS and 'ppo_mask' not in rl_zoo3.ALGOS\n"
        "assert 'safeq' not in opt.HYPERPARAMS_SAMPLER and 'safeq' not in opt.HYPERPARAMS_CONVERTER\n"
    )
    assert_ok(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120))


def test_safety_wrapper_hook_sits_inside_the_monitor() -> None:
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.monitor import Monitor

    from sb3_safeq.zoo.wrappers import safety_wrapper, shielded_safety_wrapper

    vec_env = make_vec_env(
        "SafeCliffWalking-v0",
        wrapper_class=shielded_safety_wrapper,
        monitor_kwargs={"info_keywords": tuple(SAFETY_COLUMNS)},
    )
    monitor = vec_env.envs[0]
    assert isinstance(monitor, Monitor) and isinstance(monitor.env, SafetyWrapper) and monitor.env.shield
    vec_env.reset()
    episodes = []
    for _ in range(300):
        _, _, dones, infos = vec_env.step(np.array([vec_env.action_space.sample()]))
        episodes += [info["episode"] for info, done in zip(infos, dones, strict=True) if done]
    assert episodes and all(episode_info["episode_unsafe_visits"] == 0 for episode_info in episodes)
    # Idempotent, and a plain environment is simply wrapped.
    assert safety_wrapper(monitor) is monitor
    assert isinstance(safety_wrapper(gym.make("SafeCliffWalking-v0")), SafetyWrapper)


def test_evaluation_in_the_support_never_leaves_it() -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_safeq.zoo.evaluation import evaluate_in_support

    # RandomMaskEnv raises on any action outside its mask; an untrained extraction head ignores the masks.
    model = SafeSupportQ("MlpPolicy", RandomMaskEnv(), learning_starts=10, seed=0, policy_kwargs={"net_arch": [8]})
    vec_env = make_vec_env(RandomMaskEnv, n_envs=2, wrapper_class=SafetyWrapper)
    returns, lengths = evaluate_in_support(model, vec_env, n_eval_episodes=4, return_episode_rewards=True)
    assert len(returns) == len(lengths) == 4
    mean, std = evaluate_in_support(model, vec_env, n_eval_episodes=2)
    assert np.isfinite(mean) and np.isfinite(std)
    with pytest.raises(AssertionError, match="unsafe action"):  # what SB3's evaluation does with the same model
        evaluate_policy(model, vec_env, n_eval_episodes=4)


def test_optuna_trials_evaluate_in_the_support(tmp_path: Path) -> None:
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_safeq.zoo.experiment import SafeTrialEvalCallback

    # rl-zoo3's objective reports every evaluation to the trial: here made inside the masks (RandomMaskEnv raises on
    # an action outside its mask, which the untrained extraction head would take), with the cost recorded.
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    model = SafeSupportQ("MlpPolicy", RandomMaskEnv(), learning_starts=10, seed=0, policy_kwargs={"net_arch": [8]})
    eval_env = make_vec_env(RandomMaskEnv, n_envs=1, wrapper_class=SafetyWrapper)
    callback = SafeTrialEvalCallback(eval_env, trial, n_eval_episodes=2, eval_freq=10, log_path=str(tmp_path))
    model.learn(30, callback=callback)
    assert callback.eval_idx == 3 and not callback.is_pruned
    assert sorted(study.trials[0].intermediate_values) == [1, 2, 3]
    assert callback.evaluations_unsafe_visits == [0, 0, 0]  # SafeEvalCallback's record, in evaluations.npz too
    assert set(np.load(tmp_path / "evaluations.npz")) >= {"results", "costs", "unsafe_visits"}


@pytest.mark.parametrize("n_actions", [0, 2])
def test_sampler_converts_back_what_it_sampled(n_actions: int) -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    hyperparams = hyperparams_opt.sample_safeq_params(trial, n_actions, 1, {})
    # rl-zoo3 reloads a trial by converting its stored parameters: the result must be what the trial trained with.
    assert hyperparams_opt.convert_safeq_params(trial.params) == hyperparams
    assert 1e-3 <= hyperparams["alpha"] <= 1.0
    assert hyperparams["exploration"] in ("behavior", "induced", "mixture")
    assert hyperparams["policy_kwargs"]["net_arch"] in hyperparams_opt.NET_ARCHS.values()
    assert hyperparams["batch_size"] in (32, 64, 128, 256, 512)
    box_only = {"n_behavior_samples", "extraction"}  # sampled for Box action spaces only
    assert box_only & set(hyperparams) == (box_only if n_actions > 0 else set())
    assert trial.user_attrs[hyperparams_opt.WORKER_ATTR].endswith(f":{os.getpid()}")
