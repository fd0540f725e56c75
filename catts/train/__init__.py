"""CDRL training (spec section 5): TRL reward functions (:mod:`.rewards`), original/noisy image pairs as a
``datasets.Dataset`` (:mod:`.pairs`), the rollout function that computes C and C' from the live policy
(:mod:`.rollout`) and ``catts train cdrl`` (:mod:`.cdrl`, CPU-sized config in ``configs/cdrl_tiny.yaml``).

:mod:`.rewards` needs only numpy and catts; the rest needs ``datasets`` and TRL, from the ``train`` extra
(``pip install 'catts[train]'``; ``make`` installs it).
"""
