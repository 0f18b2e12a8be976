"""``Runtime``: device, precision, gradient scaling, seeding and torch.distributed — the only module
that branches on hardware."""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .engine import to_device
from .errors import ConfigError

_AUTOCAST_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def resolve_device(device: str | None) -> torch.device:
    """None: this process's GPU if any, else CPU; 'cpu'; 'cuda:N'; 'cuda': this process's GPU.

    Under a distributed launcher (``torchrun``, ``accelerate launch``) ``None`` and ``'cuda'`` pick the
    GPU ``LOCAL_RANK``, so 'cuda' means every visible GPU, one per process.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device in (None, "cuda"):
        if torch.cuda.is_available():
            if device == "cuda" and torch.cuda.device_count() > 1 and "WORLD_SIZE" not in os.environ:
                warnings.warn(
                    f"device='cuda' sees {torch.cuda.device_count()} GPUs but this is a single process, so only "
                    "cuda:0 trains. Start one process per GPU: torchrun --nproc-per-node=N your_script.py "
                    "(or accelerate launch); trainforge does not use DataParallel.",
                    stacklevel=3,
                )
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if device == "cuda":
            raise ConfigError("device='cuda' but no CUDA GPU is visible; use device='cpu' or None")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not a device; expected None, 'cpu', 'cuda' or 'cuda:N'") from None
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if resolved.type == "cuda" and (resolved.index or 0) >= visible:
        raise ConfigError(f"device={device!r}: that GPU is not visible ({visible} visible)")
    return resolved


def backward(loss: torch.Tensor) -> None:
    """``loss.backward()``: the one place the Trainer's hot path runs autograd (public API only).

    >>> w = torch.ones(2, requires_grad=True)
    >>> backward((w * 3).sum())
    >>> w.grad
    tensor([3., 3.])
    """
    loss.backward()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch CPU and every CUDA device, as weights_only-loadable data."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state()`` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Runtime:
    """Where and how the math runs: device, autocast, GradScaler, distributed process group.

    >>> rt = Runtime(device="cpu", precision="bf16-mixed")
    >>> with rt.autocast():
    ...     y = torch.nn.Linear(2, 2)(torch.ones(1, 2))
    >>> y.dtype
    torch.bfloat16
    """

    def __init__(self, device: str | None = None, precision: str = "32", dist_timeout_s: float = 600.0) -> None:
        if precision not in ("32", *_AUTOCAST_DTYPES):
            raise ConfigError(f"precision={precision!r}; expected one of 32, 16-mixed, bf16-mixed")
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.distributed = self.world_size > 1
        self.device = resolve_device(device)
        self.precision = precision
        self.autocast_dtype = _AUTOCAST_DTYPES.get(precision)
        # fp16 needs loss scaling or small gradients underflow (Torchélie's autocast-without-scaler bug)
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "16-mixed" else None
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.distributed:
            self._init_process_group(dist_timeout_s)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _init_process_group(self, timeout_s: float) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            # explicit, short timeout: a dead or hung rank must end the job, not hang it for 30 min
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of ``loss``, scaled first when fp16 uses a ``GradScaler``."""
        backward(self.scaler.scale(loss) if self.scaler is not None else loss)

    def to_device(self, batch: Any) -> Any:
        return to_device(batch, self.device, non_blocking=self.device.type == "cuda")

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel when running under a launcher; the model itself otherwise."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    @contextlib.contextmanager
    def no_sync(self, model: torch.nn.Module, accumulating: bool) -> Iterator[None]:
        """Skip the gradient all-reduce on micro-batches that do not end an accumulation."""
        if accumulating and hasattr(model, "no_sync"):
            with model.no_sync():
                yield
        else:
            yield

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (e.g. a SIGTERM seen by one rank)."""
        if not self.distributed:
            return flag
        import torch.distributed as dist

        tensor = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())
