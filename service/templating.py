"""Where the Jinja2 templates come from, for the gateway's pages and the emails alike.

``templates/`` sits at the top of the repository and ``pyproject.toml`` maps it into the wheel
as ``service.templates``, so templates are read through ``importlib.resources`` from wherever
the package is installed. A path worked out from a module's own file would lead out of
site-packages after a plain ``pip install .``.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Literal

import jinja2
from jinja2.loaders import split_template_path

PACKAGE = "service.templates"

Kind = Literal["email", "pages"]


def loader(kind: Kind) -> jinja2.BaseLoader:
    """Loads ``templates/<kind>/<name>``. An installed template never changes under a running
    process, so Jinja2 may cache each one for good."""
    return jinja2.FunctionLoader(functools.partial(_source, files(PACKAGE) / kind))


def _source(root: Traversable, name: str) -> str | None:
    resource = root.joinpath(*split_template_path(name))
    return resource.read_text(encoding="utf-8") if resource.is_file() else None
