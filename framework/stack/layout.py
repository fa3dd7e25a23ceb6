"""Which mixer each layer gets: a base name, an explicit list repeated to n_layers, or a period/offset
shorthand as published hybrids describe themselves (Jamba: attention every 8th layer at offset 4)."""
from __future__ import annotations

from dataclasses import dataclass

from framework.config_schema import check


@dataclass
class Periodic:
    """Layer i uses mixer ``name`` when ``i % every == offset`` (``every`` = 0: off)."""

    name: str | None = None
    every: int = 0
    offset: int = 0

    def __post_init__(self) -> None:
        check(self.every >= 0, "every", f"must be >= 0 (0 = off), got {self.every}")
        if self.every:
            check(self.name is not None, "name", f"every={self.every} needs the mixer to place")
            check(0 <= self.offset < self.every, "offset", f"must be in [0, every={self.every}), got {self.offset}")


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def layer_names(base: str, layers: list[str] | None, every: Periodic, n_layers: int,
                base_field: str, list_field: str, every_field: str) -> list[tuple[str, str]]:
    """(mixer name, the config key it came from) for every layer, e.g. ("lstm", "layers[1]")."""
    if layers is not None:
        check(len(layers) >= 1, list_field, "must name at least one mixer (or be null)")
        check(n_layers % len(layers) == 0, list_field,
              f"a list of {len(layers)} mixers is repeated to n_layers={n_layers} and must divide it "
              f"(lengths that divide {n_layers}: {_divisors(n_layers)}), got {list(layers)}")
        names = [(layers[i % len(layers)], f"{list_field}[{i % len(layers)}]") for i in range(n_layers)]
    else:
        names = [(base, base_field)] * n_layers
    if every.every:
        check(layers is None, every_field, f"set either {list_field} (an explicit list) or {every_field}, not both")
        check(every.offset < n_layers, f"{every_field}.offset",
              f"offset {every.offset} is past the last layer (n_layers={n_layers})")
        names = [(every.name, f"{every_field}.name") if i % every.every == every.offset else name
                 for i, name in enumerate(names)]
    return names
