"""Filter pruning: criteria, SFP's soft masks, the hard-pruning exactness rule, compact models.

No training loops live here; the trainer calls ``SoftFilterPruner.update()`` at epoch ends, then
``hard_prune`` and ``build_compact`` once at the end (docs/ARCHITECTURE.md "Pruning").
"""
from .compact import align_kept, build_compact, load_compact, save_compact
from .criteria import CRITERIA, CriterionError, select_kept
from .hard import check_kept, hard_prune
from .sfp import MaskError, SoftFilterPruner, unwrap

__all__ = ["CRITERIA", "CriterionError", "MaskError", "SoftFilterPruner", "align_kept", "build_compact",
           "check_kept", "hard_prune", "load_compact", "save_compact", "select_kept", "unwrap"]
