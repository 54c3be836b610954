"""What the torch kinds (CNNs, the local U-Net, U-noise) share: scikit-learn's estimator rules,
thread and seed set-up, and the safetensors state round-trip.

``__init__`` only stores its arguments (``settings`` overrides the kind's defaults); fitting
resolves them into ``params_`` and builds ``network_``. ``state()`` gives the network's tensors
and the JSON parameters; ``from_state`` rebuilds the network from them.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin

from .networks import network_tensors, restored


class TorchEstimator(RegressorMixin, BaseEstimator):
    """The base of the torch kinds; subclasses set the capabilities and build the network."""

    storage = "torch"
    role = "global"
    input = "t1w"
    differentiable = True
    volume_input = True

    def __init__(self, settings=None, voxel_mm=2.0, threads=2, random_state=0):
        self.settings = settings
        self.voxel_mm = voxel_mm
        self.threads = threads
        self.random_state = random_state

    @classmethod
    def for_grid(cls, affine=None, *, settings=None, threads=2, random_state=0):
        """An estimator for inputs on the grid of ``affine`` (its voxel size, if given)."""
        voxel_mm = float(abs(np.asarray(affine)[0, 0])) if affine is not None else 2.0
        return cls(settings=settings, voxel_mm=voxel_mm, threads=threads,
                   random_state=random_state)  # fmt:skip

    def _start_fit(self) -> np.random.Generator:
        """Threads and torch's seed set; the numpy generator of this fit."""
        torch.set_num_threads(self.threads)
        torch.manual_seed(self.random_state)
        return np.random.default_rng(self.random_state)

    def _start_predict(self) -> None:
        torch.set_num_threads(self.threads)
        self.network_.eval()

    def _build_network(self, tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
        """An untrained network shaped for ``params_`` (and the stored ``tensors``)."""
        raise NotImplementedError

    def _state_params(self) -> dict:
        return {"network": self.params_}

    def _restore_params(self, params: dict) -> None:
        self.params_ = params["network"]

    def state(self) -> tuple[dict, dict]:
        return network_tensors(self.network_), self._state_params()

    @classmethod
    def from_state(cls, tensors: dict, params: dict, threads: int = 1):
        model = cls(threads=threads)
        model._restore_params(params)
        model.network_ = restored(model._build_network(tensors), tensors)
        return model
