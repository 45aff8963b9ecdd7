"""Former name of :mod:`influence.objective`, kept for code written against it."""
from influence.objective import *  # noqa: F401,F403
from influence.objective import _multinomial_hessian_from_probs, _residual  # noqa: F401
