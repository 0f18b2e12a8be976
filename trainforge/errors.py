"""Every error trainforge raises on purpose. Each says what was received, what was expected, and how
to fix it; each is also a subclass of the built-in error a caller would otherwise catch."""

from __future__ import annotations


class TrainforgeError(Exception):
    """Base of all trainforge errors."""


class ConfigError(TrainforgeError, ValueError):
    """A configuration value or key is wrong; the message names the dotted key path."""


class EmptyLoaderError(ConfigError):
    """A loader gave no batches for an epoch (an empty data set, an iterator used up by an earlier epoch)."""


class RegistryError(TrainforgeError, KeyError):
    """A name was not found in a registry; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(TrainforgeError):
    """A checkpoint could not be written, found or used."""


class CheckpointWriteError(CheckpointError, OSError):
    """Writing a checkpoint failed; the previous checkpoint is intact. Names the path and the cause."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint file fails verification (checksum, size, truncation); names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds objects that would run code when unpickled; nothing was executed."""


class ResumeMismatchError(CheckpointError):
    """The run being resumed differs from the saved one (batch size, data set, model); names both values."""


class ModelLoadError(TrainforgeError):
    """A weights or export file could not be loaded safely; names the file."""


class NonFiniteLossError(TrainforgeError, FloatingPointError):
    """The loss became NaN or infinite; names the step, the epoch, the loss terms and the sample indices."""


class CorruptImageError(TrainforgeError, OSError):
    """An image file could not be decoded; names the exact path and the reason."""


class DatasetError(TrainforgeError, ValueError):
    """A data set's files or annotation are wrong (missing files, bad labels, duplicates, size mismatches);
    the message lists every problem found, each naming its file or row."""


class RunFolderError(TrainforgeError, FileExistsError):
    """A run folder is in use by another run, or holds another run's files, or has a link planted among
    its entries; names the folder and how to proceed (resume, ``overwrite``, another ``output_dir``)."""


class ExportError(TrainforgeError, RuntimeError):
    """A model could not be exported, or the exported file computes something else than the model (ONNX
    verification); names the file, the output and the difference."""
