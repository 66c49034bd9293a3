"""Trajectories (H5MD 1.1: writer, observer, reader, repair) and checkpoints."""
from .checkpoint import read_checkpoint, write_checkpoint
from .h5md import Run, TrajectoryObserver, TrajectoryWriter, open_run, repair
from .inferencedata import to_inferencedata

__all__ = ["open_run", "repair", "Run", "TrajectoryObserver", "TrajectoryWriter", "write_checkpoint", "read_checkpoint",
           "to_inferencedata"]
