"""Neuron attribution: activation hooks (``hooks.py``, shared with Wanda pruning) and the attribution stage
(``stage.py``)."""
