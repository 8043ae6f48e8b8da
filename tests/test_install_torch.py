"""tools/install_torch.py: a CPU build on any machine (PyTorch's CPU index only when the configured one gives CUDA)."""

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "install_torch.py"


def load_tool() -> Any:
    spec = importlib.util.spec_from_file_location("install_torch", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("planned", "variant", "expected"),
    [
        (["torch", "nvidia-cublas-cu12", "sympy"], "cpu", ["--index-url", "https://download.pytorch.org/whl/cpu"]),
        (["torch", "sympy", "filelock"], "cpu", []),
        (["torch", "nvidia-cublas-cu12"], "default", []),
    ],
)
def test_the_cpu_index_is_used_only_when_the_index_would_give_cuda(
    planned: list[str], variant: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = load_tool()
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(tool, "would_install", lambda requirement: planned)
    monkeypatch.setattr(tool, "pip", lambda *arguments: calls.append(arguments))
    monkeypatch.setattr(sys, "argv", ["install_torch.py", "--variant", variant])
    tool.main()
    assert calls == [("install", "--quiet", *expected, tool.TORCH_REQUIREMENT)]


def test_the_dry_run_reads_pip_s_report() -> None:
    # Whatever the configured index serves, the plan names torch itself (and its dependencies).
    assert "torch" in load_tool().would_install("torch>=2.3,<2.14")
