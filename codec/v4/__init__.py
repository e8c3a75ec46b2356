"""Format v4's learned path: a raster-causal integer model coded by the compiled engine.

- :mod:`codec.v4.context`: which neighbours a voxel sees (the format's context rules).
- :mod:`codec.v4.tables`: the 20-bit rANS tables, from the exact integer masses of codec.tables.
- :mod:`codec.v4.model`: the float model that training fits, and its least-squares skip.
- :mod:`codec.v4.train`: training on sampled voxels, warm starts from the previous block.
- :mod:`codec.v4.freeze`: the float model turned into the int32 array the engine runs.
- :mod:`codec.v4.engine`: the glue around the C engine (stripes, threads, stream checks).
- :mod:`codec.v4.reference`: a plain-Python decoder of the same format, for the tests.
"""
