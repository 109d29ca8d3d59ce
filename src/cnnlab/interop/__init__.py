"""Models that leave cnnlab and come in: PyTorch both ways (``interop.torch``).

PyTorch is an optional dependency (``pip install cnnlab[torch]``): it is imported only when one of
these functions runs, never by ``import cnnlab``.
"""

from .torch import from_torch, load_torch_state_dict, save_torch_state_dict, to_torch, torch_source

__all__ = ["from_torch", "load_torch_state_dict", "save_torch_state_dict", "to_torch", "torch_source"]
