"""Version of the traced training graph's form (stdlib only, so caches can key on it without torch).

Bump `GRAPH_VERSION` whenever export/onnx_graph.py changes what it traces (loss form, attention form),
so bundles cached by `fedlora demo` and `fedlora simulate` are exported again rather than reused.
Version 2: graph loss as log-softmax + gather, eager attention (docs/benchmarks.md).
"""

GRAPH_VERSION = 2
