"""``archlab plugins``: what is installed, what each offers, and what is broken."""
from __future__ import annotations

from .hydra_search_path import model_options
from .registry import discover


def print_plugins(argv: list[str]) -> int:
    found = discover()
    options = model_options()
    print("plugins (entry-point group archlab.plugins):")
    for name, plugin in sorted(found.plugins.items()):
        presets = sorted(o for o, p in options.items() if p == name and o != name)
        print(f"  {name:<12} {plugin.objective:<10} {plugin.description}  [{found.sources[name]}]")
        if presets:
            print(f"  {'':<12} presets: {', '.join(presets)}")
    if found.errors:
        print("broken plugins (not loaded):")
        for name, error in sorted(found.errors.items()):
            print(f"  {name:<12} {error}")
    return 0
