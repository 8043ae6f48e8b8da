"""
Packaging: the hyperparameter files reach the package (a checkout reads ``hyperparams/``, a wheel its copy, made by
setup.py, without a link nor a setuptools warning), the wheel ships the license, and every module the zoo and the
benchmark import is in the base requirements or in their extra.
"""

import ast
import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple

import pytest
from filelock import FileLock

from sb3_safeq.commands import EXTRA_MODULES
from sb3_safeq.zoo.config import HYPERPARAMS_DIR, packaged_conf_file
from tests.test_import_graph import PACKAGE, PACKAGE_DIR, import_edges, package_modules

ROOT = PACKAGE_DIR.parent
HYPERPARAM_FILES = sorted((ROOT / "hyperparams").glob("*.yml"))

#: Import name -> the requirement of setup.cfg that provides it (optuna and huggingface_sb3 come with rl-zoo3).
PROVIDERS = {
    "gymnasium": "gymnasium",
    "numpy": "numpy",
    "rich": "rich",
    "sb3_contrib": "sb3-contrib",
    "stable_baselines3": "stable-baselines3",
    "torch": "torch",
    "tqdm": "tqdm",
    "rl_zoo3": "rl-zoo3",
    "optuna": "rl-zoo3",
    "huggingface_sb3": "rl-zoo3",
    "yaml": "pyyaml",
    "pandas": "pandas",
    "requests": "requests",
    "scipy": "scipy",
    "matplotlib": "matplotlib",
    "minari": "minari",
    "moviepy": "moviepy",
    "tensorboard": "tensorboard",
    "ray": "ray",
    "filelock": "filelock",
}
#: Modules a subpackage imports only for one option, from an extra of their own: module -> (subpackage, extra).
#: The option's own error names the extra (``--executor ray``: ``pip install "sb3-safeq[ray]"``).
OPTIONAL_IMPORTS = {"ray": ("bench", "ray")}


def _requirement_names(lines: str) -> set[str]:
    """:return: the distribution names of setup.cfg requirement lines (``rl-zoo3>=2.9,<2.10`` -> ``rl-zoo3``)"""
    names = set()
    for line in lines.splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(line.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower())
    return names


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def _third_party_imports(path: Path) -> set[str]:
    """:return: the top-level modules outside the standard library and the package that a file imports, anywhere"""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != PACKAGE}


def _imports_of(subpackage: str) -> dict[str, set[str]]:
    """
    :param subpackage: ``zoo`` or ``bench``
    :return: third-party module -> the modules of the package that import it, over every module the subpackage's
        modules import, directly or not, at any level (a module named in a dispatch string included)
    """
    modules = package_modules()
    edges = import_edges(modules)
    reached = {name for name in modules if name.startswith(f"{PACKAGE}.{subpackage}")}
    while True:
        more = {edge.target for edge in edges if edge.source in reached} - reached
        if not more:
            break
        reached |= more
    found: dict[str, set[str]] = {}
    for name in reached:
        for module in _third_party_imports(modules[name]):
            found.setdefault(module, set()).add(name)
    return found


@pytest.mark.parametrize("extra", sorted(EXTRA_MODULES))
def test_every_import_is_a_requirement_of_the_base_or_the_extra(extra: str) -> None:
    config = _setup_cfg()
    base = _requirement_names(config["options"]["install_requires"])
    in_extra = _requirement_names(config["options.extras_require"][extra])
    for module, importers in sorted(_imports_of(extra).items()):
        assert module in PROVIDERS, f"{module} (imported by {sorted(importers)}): which requirement provides it?"
        if module in OPTIONAL_IMPORTS and OPTIONAL_IMPORTS[module][0] == extra:
            option_extra = OPTIONAL_IMPORTS[module][1]
            assert PROVIDERS[module] in _requirement_names(config["options.extras_require"][option_extra])
            assert PROVIDERS[module] in _requirement_names(config["options.extras_require"]["tests"])
        elif PROVIDERS[module] not in base:
            assert module in EXTRA_MODULES[extra], f"{module} (imported by {sorted(importers)}) is not in {extra}"
    for module in EXTRA_MODULES[extra]:
        assert PROVIDERS[module] in in_extra, f"the {extra} extra of setup.cfg lacks {PROVIDERS[module]} ({module})"
    # The tests install everything.
    assert in_extra <= _requirement_names(config["options.extras_require"]["tests"])


def test_the_console_script_is_the_dispatcher() -> None:
    assert _setup_cfg()["options.entry_points"]["console_scripts"].strip() == "sb3-safeq = sb3_safeq.cli:main"


def test_a_checkout_reads_the_repository_hyperparameter_files() -> None:
    assert HYPERPARAM_FILES, "no hyperparams/*.yml"
    # hyperparams/ is the only copy: no link nor copy inside the package's source, which setuptools would warn about.
    packaged = PACKAGE_DIR / "zoo" / "hyperparams"
    assert not packaged.exists() and not packaged.is_symlink()
    assert HYPERPARAMS_DIR == ROOT / "hyperparams"
    for path in HYPERPARAM_FILES:
        assert packaged_conf_file(path.stem) == path
    assert packaged_conf_file("no_such_algo") is None


class BuiltWheel(NamedTuple):
    """The wheel the packaging tests share, and pip's output while building it."""

    path: Path
    output: str


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> BuiltWheel:
    """
    :param tmp_path_factory: pytest's factory of temporary folders
    :param request: the fixture request (its config tells a pytest-xdist worker)
    :return: the wheel, built once per test run for the tests of this module
    """
    # One build per run: pytest-xdist's workers share the folder above their own temporary folders, where the first
    # worker to get there builds while the others wait on the lock.
    is_worker = hasattr(request.config, "workerinput")
    shared = tmp_path_factory.getbasetemp().parent if is_worker else tmp_path_factory.getbasetemp()
    folder = shared / "built_wheel"
    with FileLock(f"{folder}.lock"):
        if not (folder / "output.txt").exists():
            # Built from a copy, so that the build leaves nothing in the checkout; without build isolation when
            # setuptools is here (no index needed, a few seconds).
            source = folder / "source"
            source.mkdir(parents=True, exist_ok=True)
            for name in ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
                shutil.copy2(ROOT / name, source / name)
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            for name in (PACKAGE, "hyperparams"):
                shutil.rmtree(source / name, ignore_errors=True)
                shutil.copytree(ROOT / name, source / name, ignore=ignore)
            isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") is not None else []
            build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-v", "-w", str(folder / "dist")]
            result = subprocess.run([*build, *isolation], capture_output=True, text=True, timeout=300)
            output = result.stdout + result.stderr
            assert result.returncode == 0, output[-5000:]
            (folder / "output.txt").write_text(output)
    (wheel,) = (folder / "dist").glob("sb3_safeq-*.whl")
    return BuiltWheel(wheel, (folder / "output.txt").read_text())


def test_a_wheel_ships_every_hyperparameter_file(built_wheel: BuiltWheel, tmp_path: Path) -> None:
    wheel, output = built_wheel
    assert "absent from the `packages` configuration" not in output, output[-5000:]
    assert not [line for line in output.splitlines() if "Warning" in line and "hyperparams" in line]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(name).decode() for name in names if name.endswith("entry_points.txt"))
    for path in HYPERPARAM_FILES:
        assert f"{PACKAGE}/zoo/hyperparams/{path.name}" in names, sorted(names)
    assert "sb3-safeq = sb3_safeq.cli:main" in entry_points

    # Installed alone (its dependencies are this environment's), imported from elsewhere than the checkout.
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)]
    assert subprocess.run(install, capture_output=True, timeout=300).returncode == 0
    code = (
        "import sys\n"
        "import sb3_safeq.zoo.config as config\n"
        f"assert config.__file__.startswith({str(target)!r}), config.__file__\n"
        f"for name in {[path.name for path in HYPERPARAM_FILES]!r}:\n"
        "    found = config.packaged_conf_file(name[:-4])\n"
        "    assert found == config.HYPERPARAMS_DIR / name and found.is_file(), (name, found)\n"
        f"assert str(config.HYPERPARAMS_DIR).startswith({str(target)!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    imported = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert imported.returncode == 0, imported.stderr[-3000:]


def test_the_wheel_ships_the_license(built_wheel: BuiltWheel) -> None:
    with zipfile.ZipFile(built_wheel.path) as archive:
        names = archive.namelist()
        # dist-info/licenses/LICENSE (PEP 639, setuptools >= 77) or dist-info/LICENSE (older setuptools)
        licenses = [name for name in names if ".dist-info/" in name and name.endswith("/LICENSE")]
        assert len(licenses) == 1, sorted(names)
        shipped = archive.read(licenses[0]).decode()
        metadata = archive.read(next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
    assert shipped == (ROOT / "LICENSE").read_text()
    assert "MIT License" in shipped and "Copyright (c) 2026 The sb3-safeq developers" in shipped
    assert "License-File: LICENSE" in metadata.splitlines(), metadata[:3000]
