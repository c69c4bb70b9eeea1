"""The torch device of a training or inference run."""

from __future__ import annotations

import torch

from ..._shared import InputError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for `device`: ``"auto"`` is CUDA when present, else the CPU.

    Raises
    ------
    InputError
        CUDA asked for explicitly (``"cuda"``, ``"cuda:1"``) but not available, or an unknown name.
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'", source="device") from None
    if chosen.type == "cpu":
        return chosen
    if chosen.type != "cuda":
        raise InputError(f"unsupported device {device!r}; use 'auto', 'cpu' or 'cuda'", source="device")
    if not torch.cuda.is_available():
        raise InputError("CUDA was asked for but no CUDA device is available", source="device")
    if chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise InputError(f"CUDA device {chosen.index} asked for but only {torch.cuda.device_count()} present",
                         source="device")
    return chosen
