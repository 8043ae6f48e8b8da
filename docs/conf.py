"""
Sphinx configuration of the sb3-safeq documentation: ``make docs`` builds it with warnings as errors
(``sphinx-build -E -W --keep-going -b html docs docs/_build/html``).

The pages are the repository's Markdown files (read by MyST: README.md, CHANGELOG.md and docs/*.md, each kept readable
on GitHub) plus the algorithm and API pages, whose reference is generated from the docstrings (autodoc imports the
installed package). The build needs no network: no intersphinx, no remote images, a theme installed from pip.
"""

from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform

DOCS_DIR = Path(__file__).resolve().parent
ROOT = DOCS_DIR.parent

project = "sb3-safeq"
author = "The sb3-safeq developers"
copyright = f"2026, {author}"
release = (ROOT / "sb3_safeq" / "version.txt").read_text().strip()
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# MyST: the Markdown pages link to each other's sections as GitHub renders them (`guide.md#8-continuous-box-actions`):
# generate the same slugs for headings down to level 3.
myst_heading_anchors = 3

# Autodoc: the docstrings are reST with `:param:` fields; the type hints stay in the signatures. (Not "description":
# Sphinx 9 then types a class's constructor parameters from the class's attribute annotations of the same name, so
# SafeSupportQ's `policy: str | type[...]` would read as the `policy` attribute's type.)
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}

html_theme = "sphinx_rtd_theme"
html_title = f"sb3-safeq {release}"
html_theme_options = {"navigation_depth": 3}


class RepositoryFolderLinks(SphinxPostTransform):
    """
    Show a Markdown link to a folder of the repository outside ``docs/`` (benchmarks.md's
    ``[`benchmarks/full/`](../benchmarks/full)``, which GitHub opens as a folder) as its text, instead of a broken
    link and MyST's ``myst.xref_missing`` warning: the site has no such page. A link to a file there still becomes a
    download, and a link to a missing page or folder still fails the build.
    """

    default_priority = 8  # before MyST's resolver (9), which warns about them

    def run(self, **kwargs: Any) -> None:
        """Replace each such link by its content."""
        for node in list(self.document.findall(addnodes.pending_xref)):
            if node.get("reftype") != "myst" or node.get("refdomain"):
                continue
            _, target = self.env.relfn2path(node["reftarget"].split("#")[0], node.get("refdoc", self.env.docname))
            folder = Path(target).resolve()
            if folder.is_dir() and folder.is_relative_to(ROOT) and not folder.is_relative_to(DOCS_DIR):
                node.replace_self(nodes.inline("", "", *node.children))


def setup(app: Sphinx) -> dict[str, Any]:
    """:return: the extension metadata of this configuration's own transform"""
    app.add_post_transform(RepositoryFolderLinks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
