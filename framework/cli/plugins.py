"""``archlab plugins``: what is installed, what each offers (presets with their one-line descriptions,
stack mixers), and what is broken. ``archlab plugins -v`` adds each plugin's config fields (type, default,
allowed values) and what each preset changes."""
from __future__ import annotations

import sys
from importlib import resources

from ..hydra_search_path import model_options
from .plugin_fields import field_rows, preset_changes
from ..mixers.registry import discover_mixers
from ..registry import discover


def preset_description(config_package: str, option: str) -> str:
    """The first comment line of ``model/<option>.yaml``: what the preset imitates."""
    text = (resources.files(config_package) / "model" / f"{option}.yaml").read_text()
    first = next((line for line in text.splitlines() if line.strip()), "")
    return first.lstrip("# ").strip() if first.startswith("#") else ""


def print_plugins(argv: list[str]) -> int:
    unknown = [a for a in argv if a not in ("-v", "--verbose")]
    if unknown:
        print(f"archlab plugins: error: unknown argument(s) {' '.join(unknown)}; usage: archlab plugins [-v]",
              file=sys.stderr)
        return 2
    verbose = bool(argv)
    found = discover()
    options = model_options()
    print("plugins (entry-point group archlab.plugins):")
    for name, plugin in sorted(found.plugins.items()):
        print(f"  {name:<12} {plugin.objective:<10} {plugin.description}  [{found.sources[name]}]")
        presets = sorted(o for o, p in options.items() if p == name and o != name)
        for option in presets:
            print(f"  {'':<12} model={option:<20} {preset_description(plugin.config_package, option)}")
            if verbose:
                print(f"  {'':<12} {'':<26} {preset_changes(plugin.config_package, option)}")
        if verbose:
            print(f"  {'':<12} fields (model.<field>=<value>): type = default")
            rows = field_rows(plugin.config_class())
            width = max(len(name) for name, _, _ in rows)
            for field, kind, default in rows:
                print(f"  {'':<12}   {field:<{width}}  {kind} = {default}")
    if found.errors:
        print("broken plugins (not loaded):")
        for name, error in sorted(found.errors.items()):
            print(f"  {name:<12} {error}")
    mixers = discover_mixers()
    print("stack mixers (entry-point group archlab.mixers; model.mixer / model.layers, model.ffn / model.ffn_layers):")
    for role in ("token", "channel"):
        for name, spec in sorted(mixers.mixers.items()):
            if spec.role == role:
                print(f"  {role:<8} {name:<15} {spec.description}")
    for name, error in sorted(mixers.errors.items()):
        print(f"  broken   {name:<15} {error}")
    return 0
