"""
The build hook of the hyperparameter files; everything else is in setup.cfg.

``hyperparams/*.yml`` at the repository root is the only copy of the files (rl-zoo3's layout): ``build_py`` copies
them into the built package as ``sb3_safeq/zoo/hyperparams/``, where an installed wheel finds them
(:data:`sb3_safeq.zoo.config.HYPERPARAMS_DIR`). As package data they would need a folder (or a link, which made every
build warn that the package ``sb3_safeq.zoo.hyperparams`` is absent from ``packages``) inside the package's source.
An editable install copies nothing: it reads the repository's ``hyperparams/`` in place.
"""

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HYPERPARAMS_SOURCE = Path(__file__).resolve().parent / "hyperparams"
HYPERPARAMS_PACKAGE_DIR = ("sb3_safeq", "zoo", "hyperparams")


class BuildPyWithHyperparams(build_py):
    """``build_py`` that also copies ``hyperparams/*.yml`` into the built package."""

    def _hyperparams_mapping(self) -> dict[str, str]:
        """:return: destination in the build folder -> source file, for every hyperparameter file"""
        sources = sorted(HYPERPARAMS_SOURCE.glob("*.yml"))
        if not sources:  # e.g. an sdist without them (MANIFEST.in includes them): a wheel without them would not work
            raise FileNotFoundError(f"No hyperparameter file in {HYPERPARAMS_SOURCE}: cannot build sb3-safeq.")
        target_dir = os.path.join(self.build_lib, *HYPERPARAMS_PACKAGE_DIR)
        return {os.path.join(target_dir, source.name): str(source) for source in sources}

    def run(self) -> None:
        """Build the package, then copy the hyperparameter files into it (not in editable mode: read in place)."""
        super().run()
        if self.editable_mode:
            return
        for target, source in self._hyperparams_mapping().items():
            self.mkpath(os.path.dirname(target))
            self.copy_file(source, target)

    def get_output_mapping(self) -> dict[str, str]:
        """:return: setuptools' mapping plus the hyperparameter files (a strict editable install links them)"""
        return {**super().get_output_mapping(), **self._hyperparams_mapping()}

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        """
        :param include_bytecode: also list the ``.pyc`` files
        :return: the built files, the hyperparameter files included
        """
        outputs = list(super().get_outputs(include_bytecode))  # in editable mode: the keys of get_output_mapping
        return outputs + [target for target in self._hyperparams_mapping() if target not in outputs]


setup(cmdclass={"build_py": BuildPyWithHyperparams})
