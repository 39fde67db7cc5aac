"""Hand-written NumPy BPTT for character RNN, LSTM and GRU models, plus hand-written optimizers
(AdaGrad, RMSProp, Adam, and Hessian-free on ``manual.hessian``'s Gauss-Newton product).

``manual.model`` holds the model (input lookup, stacked layers, output, loss) and one module
per cell type holds its recurrence: ``manual.rnn``, ``manual.lstm``, ``manual.gru``; ``manual.rtrl``
holds the same gradient by forward mode (real-time recurrent learning).
Imports nothing from ``torchref`` or ``compare``: parameters are plain NumPy dicts.
"""

from manual import flat
from manual.adagrad import Adagrad
from manual.adam import Adam
from manual.hessian_free import HessianFree
from manual.model import CELLS, Cache, backward, forward, layer_param_names, step, zero_state
from manual.rmsprop import RMSprop

__all__ = [
    "Adagrad",
    "Adam",
    "HessianFree",
    "RMSprop",
    "flat",
    "CELLS",
    "Cache",
    "backward",
    "forward",
    "layer_param_names",
    "step",
    "zero_state",
]
