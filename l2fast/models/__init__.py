"""Stage 2 of a bar's path: the exported agents and what they observe.

- :mod:`l2fast.models.manifest`: the JSON manifest written beside every exported model.
- :mod:`l2fast.models.loading`: load one model (ONNX + manifest), validate a folder of them.
- :mod:`l2fast.models.ensemble`: every member fused into one onnxruntime graph.
- :mod:`l2fast.models.stacking`: same-shape MLP members stacked into one wider MLP.
- :mod:`l2fast.models.compiled`: plain-MLP members run by the compiled forward
  (:mod:`l2fast.models._mlp`), each checked against onnxruntime at load.
"""
