"""Explanations at dataset scale: batched runs over image folders into resumable Zarr stores.

* :func:`run_dataset` explains every image of a folder (DataLoader, batches, GPU options,
  torchrun sharding) into a chunked Zarr store with a predictions CSV.
* :func:`merge_shards` merges the per-rank shard stores of a multi-GPU run.
* :func:`prepare_model` places a model for fast explanation (device, channels-last, compile).
* :class:`StoreBusyError`: another live process writes the store (one writer per store).
"""

from .accel import compile_regions, prepare_model, resolve_device, resolve_dtype
from .lock import StoreBusyError
from .merge import merge_shards
from .runner import distributed_env, run_dataset, weights_fingerprint
from .store import MapStore

__all__ = ["run_dataset", "merge_shards", "prepare_model", "compile_regions", "resolve_device",
           "resolve_dtype", "distributed_env", "weights_fingerprint", "MapStore",
           "StoreBusyError"]
