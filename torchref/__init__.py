"""The same character RNN in PyTorch: a hand-rolled cell, gradients from autograd.

Imports nothing from ``manual`` or ``compare``: it is built from a plain NumPy
parameter dict.
"""
from torchref.rnn import CharRNN

__all__ = ["CharRNN"]
