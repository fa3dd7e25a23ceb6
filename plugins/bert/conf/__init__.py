"""Hydra options of the bert plugin: model/bert.yaml and presets."""
