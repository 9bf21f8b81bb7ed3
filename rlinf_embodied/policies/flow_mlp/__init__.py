"""`flow_mlp`: a flow-matching action policy on state observations; see modeling.py."""

from .configuration import FLOW_MLP_PRESETS, FlowMLPConfig

__all__ = ["FLOW_MLP_PRESETS", "FlowMLPConfig"]
