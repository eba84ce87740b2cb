"""Sphinx configuration: the Markdown pages of docs/ (myst-parser) and an API reference
built from the docstrings (autodoc). Built offline with warnings as errors by .ci/run:

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # this checkout's vae_jax, installed or not

project = "vae_jax"
author = "vae_jax developers"
copyright = "vae_jax developers"  # noqa: A001 (Sphinx's name)

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "images/README.md"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# The API reference: members in source order, signatures with their type hints as written.
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True   # "Attributes:" sections
napoleon_numpy_docstring = False
napoleon_use_ivar = True           # attributes as fields of their class, not new objects
autodoc_mock_imports = ["tensorflow", "tensorflow_datasets", "grain", "torch"]

html_theme = "alabaster"
html_title = "vae_jax"
html_static_path = []
