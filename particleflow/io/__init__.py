"""Trajectories (H5MD 1.1), checkpoints and run configs."""
from .checkpoint import read_checkpoint, write_checkpoint
from .h5md import Run, TrajectoryWriter, open_run, repair

__all__ = ["open_run", "repair", "Run", "TrajectoryWriter", "write_checkpoint", "read_checkpoint"]
