"""The recipes: run one with ``codetune train NAME`` or ``accelerate launch recipes/NAME.py``.

Installed, this folder is the package ``trainer.recipes`` (with ``configs/``), so the command finds
the recipes outside a checkout too.
"""
