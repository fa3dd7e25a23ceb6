"""archlab's core: plugin contract and discovery, Hydra configs, the Lightning loop, logging."""
from .config_schema import ConfigError, validate_config
from .output import ModelOutput
from .plugin import ENTRY_POINT_GROUP, OBJECTIVES, Plugin
from .registry import build_model, get_plugin, list_plugins, make_config, plugin_errors

__all__ = [
    "ConfigError",
    "ENTRY_POINT_GROUP",
    "ModelOutput",
    "OBJECTIVES",
    "Plugin",
    "build_model",
    "get_plugin",
    "list_plugins",
    "make_config",
    "plugin_errors",
    "validate_config",
]
