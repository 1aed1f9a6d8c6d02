"""Version of the traced training graph's form (stdlib only, so caches can key on it without torch).

Bump `GRAPH_VERSION` whenever export/onnx_graph.py or export/graph_forms.py changes what it traces (loss
form, attention form), so bundles cached by `fedlora demo` and `fedlora simulate` are exported again
rather than reused (docs/benchmarks.md has each form's measurements).
Version 2: graph loss as log-softmax + gather, eager attention.
Version 3: graph loss as shifted log-sum-exp from the hidden states, `rotate_half` as a MatMul,
grouped-query attention without repeated key/value heads.
"""

GRAPH_VERSION = 3
