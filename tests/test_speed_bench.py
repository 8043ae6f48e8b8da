"""``python -m sb3_safeq.bench.speed``: the interleaved speed table and its multiply-add counts."""

import sys

import pytest

from sb3_safeq.bench import speed


def _table(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *arguments: str) -> dict[str, list[str]]:
    monkeypatch.setattr(sys, "argv", ["speed", "--steps", "60", "--repeats", "1", "--net-arch", "8", *arguments])
    speed.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    return {row.split("|")[1].strip(): [cell.strip() for cell in row.split("|")[2:-1]] for row in rows[1:]}


def test_discrete_table_counts_the_two_networks(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    table = _table(capsys, monkeypatch, "--env", "SafeCliffWalking-v0", "--train-freq", "4", "--batch-size", "8")
    assert set(table) == {"DQN", "DQN + fused Adam", "SafeSupportQ"}
    steps_per_second, ratio, _, macs, bound = table["SafeSupportQ"]
    assert float(steps_per_second) > 0 and float(ratio) > 0
    # DQN trains one network; SafeSupportQ the critic and the extraction head, so more multiply-adds per step.
    assert table["DQN"][4] == "1.00" and 0.2 < float(bound) < 1.0
    assert int(macs.replace(",", "")) > int(table["DQN"][3].replace(",", ""))


def test_box_multiply_adds_grow_with_the_samples_and_shrink_with_shared_draws() -> None:
    common = {"learning_starts": 50, "batch_size": 8, "policy_kwargs": {"net_arch": [8]}}
    counts = {
        (n, shared): speed.multiply_adds_per_gradient_step(
            speed.SafeSupportQ, "SafePointMass-v0", 0, {**common, "n_behavior_samples": n, "share_target_draws": shared}
        )
        for n in (4, 8)
        for shared in (False, True)
    }
    assert counts[(8, False)] > counts[(4, False)] > counts[(4, True)]
    assert counts[(8, True)] < counts[(8, False)]


def test_sweep_over_the_number_of_actions(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    arguments = ("--sweep", "n_actions", "--values", "4", "32", "--train-freq", "4", "--batch-size", "8")
    table = _table(capsys, monkeypatch, *arguments)
    # The header row is dropped by _table; one row per value, each timed against DQN.
    assert set(table) == {"4", "32"}
    for baseline, ours, ratio, per_repeat, bound in table.values():
        assert baseline.endswith("(DQN)") and float(ours) > 0 and float(ratio) > 0 and per_repeat
        assert 0.2 < float(bound) < 1.0


def test_sweep_builds_each_point() -> None:
    common = {"batch_size": 64, "policy_kwargs": {"net_arch": [64, 64]}}
    env, point, n = speed.sweep_point("width", 256, "SafePointMass-v0", common, 16)
    assert env == "SafePointMass-v0" and point["policy_kwargs"]["net_arch"] == [256, 256] and n == 16
    assert common["policy_kwargs"]["net_arch"] == [64, 64]  # the shared settings are not modified
    env, point, n = speed.sweep_point("n_actions", 128, "SafePointMass-v0", common, 16)
    built = env()  # type: ignore[operator]
    assert built.action_space.n == 128 and built.reset(seed=0)[0].shape == (8,)
    assert built.action_masks().any()
    assert speed.sweep_point("n_samples", 64, "SafePointMass-v0", common, 16)[2] == 64
    assert speed.sweep_point("batch_size", 1024, "SafePointMass-v0", common, 16)[1]["batch_size"] == 1024
    with pytest.raises(ValueError, match="Unknown sweep"):
        speed.sweep_point("gamma", 1, "SafePointMass-v0", common, 16)
