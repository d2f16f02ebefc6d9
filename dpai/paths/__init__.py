"""The topology of a mask on any torch.fx-traceable model: the path-counting network, exact
path counts, effective nodes, kernels and weights, the unit graph, FLOPs
(docs/path-counting.md)."""
from .counts import effective_counts, exact_paths, log_paths_reference, topology
from .flops import flops
from .network import MODES, PathNetwork, no_tf32
from .units import unit_graph

__all__ = ["PathNetwork", "MODES", "no_tf32", "topology", "exact_paths", "effective_counts",
           "log_paths_reference", "flops", "unit_graph"]
