"""Hand-written NumPy BPTT for character RNN, LSTM and GRU models, plus a hand-written AdaGrad.

``manual.model`` holds the model (input lookup, stacked layers, output, loss) and one module
per cell type holds its recurrence: ``manual.rnn``, ``manual.lstm``, ``manual.gru``; ``manual.rtrl``
holds the same gradient by forward mode (real-time recurrent learning).
Imports nothing from ``torchref`` or ``compare``: parameters are plain NumPy dicts.
"""

from manual import flat
from manual.adagrad import Adagrad
from manual.model import CELLS, Cache, backward, forward, layer_param_names, step, zero_state

__all__ = ["Adagrad", "flat", "CELLS", "Cache", "backward", "forward", "layer_param_names", "step", "zero_state"]
