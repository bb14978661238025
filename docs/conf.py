"""Sphinx configuration of the mulan_ppl documentation (``make docs``: HTML in ``docs/_build/html``, warnings are
errors)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "mulan_ppl"
author = "mulan_ppl developers"
copyright = "mulan_ppl developers"  # noqa: A001
release = version = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Google-style docstrings (STYLE.md rule 13), with the library's own "Mathematical details:" section.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = ["Mathematical details"]
napoleon_use_rtype = False

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "mulan_ppl"
