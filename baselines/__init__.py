"""Baselines, each a plugin on the method contract (registered on import).

- ``unshared``: the plain network;
- ``reduced``: the largest plain network of the family within the budget (width/depth);
- ``soft-sharing``: per-stage template banks mixed by per-layer coefficients (Savarese & Maire);
- ``hard-sharing``: repeated blocks of a stage share their conv weights;
- ``hashed``: HashedNets, every weight hashed into one shared bank (Chen et al.);
- ``ensemble``: independent full networks trained together (anytime subsets evaluated).
"""

from . import unshared  # noqa: F401
from . import ensemble, hard_sharing, hashed, reduced, soft_sharing  # noqa: F401
