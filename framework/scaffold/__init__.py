"""``archlab new-plugin``: generates a complete plugin package from the templates in ``templates.py``."""
from .new_plugin import ScaffoldError, check_name, new_plugin, run_new_plugin

__all__ = ["ScaffoldError", "check_name", "new_plugin", "run_new_plugin"]
