"""Hand-written NumPy BPTT for the vanilla character RNN, plus a hand-written AdaGrad.

Imports nothing from ``torchref`` or ``compare``: parameters are plain NumPy dicts.
"""
from manual.adagrad import Adagrad
from manual.rnn import Cache, backward, forward, step

__all__ = ["Adagrad", "Cache", "backward", "forward", "step"]
