"""Shapes world: a self-trained toy text-to-image model that makes Tune-A-Video measurable on CPU.

- :mod:`tav.shapes.world` renders 64x64 coloured shapes, captions them and moves them in clips;
- :mod:`tav.shapes.analyzer` reads frames back (colour, shape, position) and computes the metrics;
- :mod:`tav.shapes.train` trains the toy SD-format model shipped in ``tav/assets/shapes_model``;
- :mod:`tav.shapes.evaluate` runs the paper's comparison and ablations on the bundled clips;
- :mod:`tav.shapes.demo` is ``python -m tav demo``.
"""
