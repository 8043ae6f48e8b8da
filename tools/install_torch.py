"""
Install PyTorch into the current environment, CPU-only unless asked otherwise, on any machine.

    python tools/install_torch.py            # CPU build (what `make` does)
    python tools/install_torch.py --variant default   # whatever the package index serves (CUDA builds on PyPI)

A plain ``pip install torch`` from PyPI on Linux pulls the CUDA build (several GB of ``nvidia-*`` wheels). This
script asks pip what it *would* install first (``--dry-run --report``): if that includes ``nvidia-*`` packages, it
installs from PyTorch's CPU wheel index instead; if the configured index already serves a CPU build (as mirrors and
macOS / Windows wheels do), it installs from there unchanged.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

#: The torch versions sb3-safeq supports (setup.cfg's install_requires says the same).
TORCH_REQUIREMENT = "torch>=2.3,<2.14"
#: PyTorch's index of CPU-only wheels.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def pip(*arguments: str) -> None:
    """Run pip of this interpreter, failing loudly."""
    subprocess.run([sys.executable, "-m", "pip", *arguments], check=True)


def would_install(requirement: str) -> list[str]:
    """:return: the names of the distributions ``pip install requirement`` would install (ignoring installed ones)"""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        pip("install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(report), requirement)
        return [item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variant",
        choices=("cpu", "default"),
        default="cpu",
        help="cpu: a CPU-only build (PyTorch's CPU index when the configured index would give CUDA); default: what "
        "the configured index serves (e.g. CUDA builds from PyPI)",
    )
    args = parser.parse_args()
    if args.variant == "default":
        pip("install", "--quiet", TORCH_REQUIREMENT)
        return
    cuda = [name for name in would_install(TORCH_REQUIREMENT) if name.startswith("nvidia-")]
    if cuda:
        print(f"The package index would install a CUDA build ({len(cuda)} nvidia-* wheels): using {CPU_INDEX}")
        pip("install", "--quiet", "--index-url", CPU_INDEX, TORCH_REQUIREMENT)
    else:
        pip("install", "--quiet", TORCH_REQUIREMENT)


if __name__ == "__main__":
    main()
