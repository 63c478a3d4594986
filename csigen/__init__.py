"""csigen: a tutorial and reproduction kit for CSI + synthetic images (Yu & Chiu).

Importing the package does nothing but define names: data, models and
optimisers are built only when a function is called.
"""

__version__ = "0.3.1"

#: The public home of the kit. Colab badges and install cells are generated
#: from this one constant (see ``tools/sync_notebook_links.py``); change it here.
REPO_URL = "https://github.com/csigen/csigen"
REPO_BRANCH = "main"

__all__ = ["__version__", "REPO_URL", "REPO_BRANCH"]
