"""Training, evaluation and export of the deformation generator (needs the ``train`` extra).

Nothing here is imported by ``deid run``: the pipeline only loads the exported ONNX graph.
"""
