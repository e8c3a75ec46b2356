"""The acquisition as both sides read it: raw volumes (TensorStore), their identity, the block
grid, and the revisions (growth, changed bytes) of blocks already coded."""
