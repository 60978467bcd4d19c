"""Mailgate's Jinja2 templates, installed as the package ``service.templates``.

The folder stays at the top of the repository; ``pyproject.toml`` maps it into the package so
that a wheel carries it. This file only makes it a regular package, which importlib.resources
and the editable install's finder need. ``service.templating`` loads from it.
"""
