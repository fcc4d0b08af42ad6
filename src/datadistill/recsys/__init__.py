"""Recommender systems: ∞-AE / EASE / MF recommenders, ranking metrics, user-subset baselines and
the evaluation protocol for recommender summaries (registered as the ``recsys`` modality)."""
from .evaluation import RECSYS_PROTOCOLS, evaluate_recsys, select_and_test  # noqa: F401
from .metrics import rank_metrics  # noqa: F401
from .models import RECOMMENDERS, create_recommender  # noqa: F401
