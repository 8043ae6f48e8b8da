"""
The documentation site (``make docs``): every name ``sb3_safeq`` exports, and every policy of SafeSupportQ, has its
autodoc entry on a page of ``docs/``, and the docs extra provides the extensions and the theme that docs/conf.py uses.
"""

import ast
import configparser
import importlib
import re
from pathlib import Path
from typing import Any

import sb3_safeq
import sb3_safeq.safeq

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# `.. currentmodule:: x` and `.. autoclass:: Name` / `.. autofunction:: x.y.name` ... lines of the reST pages.
DIRECTIVE = re.compile(r"^\.\. (currentmodule|auto(?:class|function|exception|data))::\s+(\S+)", re.MULTILINE)
#: The distribution of setup.cfg's docs extra behind each extension or theme module docs/conf.py names.
DOCS_PROVIDERS = {"myst_parser": "myst-parser", "sphinx_rtd_theme": "sphinx-rtd-theme", "sphinx": "sphinx"}


def _resolve(path: str) -> Any:
    """:return: the object at a dotted path such as ``sb3_safeq.safeq.MlpPolicy``"""
    module_name, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def _documented_objects() -> list[Any]:
    """:return: the objects that an autodoc directive of a docs/ page documents"""
    objects = []
    for page in sorted(DOCS.rglob("*.rst")):
        if "_build" in page.parts:
            continue
        module = ""
        for kind, target in DIRECTIVE.findall(page.read_text()):
            if kind == "currentmodule":
                module = target
            else:
                objects.append(_resolve(target if "." in target else f"{module}.{target}"))
    return objects


def test_every_exported_name_and_policy_is_documented() -> None:
    documented = _documented_objects()
    exported = {name: getattr(sb3_safeq, name) for name in sb3_safeq.__all__}
    exported |= {f"safeq.{name}": getattr(sb3_safeq.safeq, name) for name in sb3_safeq.safeq.__all__}
    missing = [name for name, obj in exported.items() if not any(obj is entry for entry in documented)]
    assert not missing, f"not documented in docs/*.rst (autoclass/autofunction): {missing}"


def test_the_docs_extra_provides_what_conf_py_uses() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extra = {line.split("<")[0].split(">")[0].strip() for line in config["options.extras_require"]["docs"].split("\n")}
    tree = ast.parse((DOCS / "conf.py").read_text())
    settings = {
        target.id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in ("extensions", "html_theme")
    }
    modules = {extension.split(".")[0] for extension in settings["extensions"]} | {settings["html_theme"]}
    for module in sorted(modules):
        assert DOCS_PROVIDERS[module] in extra, f"the docs extra of setup.cfg lacks {DOCS_PROVIDERS[module]} ({module})"
    # No extension that reaches the network while building.
    assert "sphinx.ext.intersphinx" not in settings["extensions"]
