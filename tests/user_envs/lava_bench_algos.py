"""
A user's own benchmark algorithms (``sb3-safeq bench --algo-module lava_bench_algos``): a SafeSupportQ variant
registered by name, and a shielded DQN variant that is only named by import path (``lava_bench_algos:DQN_GREEDY``).
"""

from sb3_safeq.bench.algorithms import AlgoSpec, get_algo, register_algo

#: SafeSupportQ with a fast target network, run as ``--algos safeq_tau0.5`` once this module is imported.
SAFEQ_FAST_TARGET = register_algo(
    AlgoSpec("safeq_tau0.5", "safeq", "any", "sb3_safeq:SafeSupportQ", use_support=True, extra_kwargs={"tau": 0.5})
)
#: Shielded DQN without exploration at the end, not registered: ``--algos lava_bench_algos:DQN_GREEDY``.
DQN_GREEDY = AlgoSpec(
    "dqn_shield_greedy",
    get_algo("dqn_shield").hyperparams,
    "discrete",
    "stable_baselines3:DQN",
    shield=True,
    extra_kwargs={"exploration_final_eps": 0.0},
)
