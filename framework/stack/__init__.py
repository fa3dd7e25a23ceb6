"""The composable decoder stack: any token mixer x any channel mixer per layer (see framework/mixers)."""
from .config import StackConfig
from .layout import Periodic
from .metrics import stack_metrics
from .model import Layer, StackLM, build_stack
from .state import StackState

__all__ = ["Layer", "Periodic", "StackConfig", "StackLM", "StackState", "build_stack", "stack_metrics"]
