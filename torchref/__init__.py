"""The same character models in PyTorch: hand-rolled cells, gradients from autograd.

``torchref.model.CharRNN`` holds the model; one module per cell type holds its time step:
``torchref.rnn``, ``torchref.lstm``, ``torchref.gru``; ``torchref.forward`` differentiates it by forward
mode (``torch.func.jvp``, ``jacfwd``); ``torchref.adagrad`` holds AdaGrad with
eps inside the square root (min-char-rnn's rule); ``torchref.hessian_free`` Hessian-free
optimization on ``torchref.second``'s Gauss-Newton product. Imports nothing from ``manual`` or
``compare``: it is built from a plain NumPy parameter dict.
"""

from torchref.adagrad import AdagradEpsInside
from torchref.hessian_free import HessianFree
from torchref.model import CELLS, CharRNN

__all__ = ["AdagradEpsInside", "CELLS", "CharRNN", "HessianFree"]
