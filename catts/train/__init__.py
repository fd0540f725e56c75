"""CDRL training pieces (spec section 5): TRL reward functions (:mod:`.rewards`) and original/noisy image pairs as
a ``datasets.Dataset`` (:mod:`.pairs`).

:mod:`.rewards` needs only numpy and catts; :mod:`.pairs` needs ``datasets`` and training itself needs TRL, both
from the optional ``train`` extra (``pip install 'catts[train]'``).
"""
