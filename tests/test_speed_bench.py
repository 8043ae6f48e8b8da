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
