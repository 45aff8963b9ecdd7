"""One damped-Newton loop for a batch of problems, with its direction strategies."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from influence.objective import LogisticObjective, project_out_gauge
from influence.solvers import preconditioned_cg_rows


def cg_directions(objective: LogisticObjective, Theta, G, precond, rtol, maxiter):
    """Directions ``A_j^{-1} G[j]`` for each problem j of the batch, by preconditioned
    CG (:func:`influence.solvers.preconditioned_cg_rows`) on the exact Hessians at
    ``Theta[j]`` (:meth:`LogisticObjective.hvp`), gauge component removed. G: (B, d)
    NumPy. Returns (directions as a (B, d) tensor, the CG result)."""
    curv = objective.curvature(Theta)
    res = preconditioned_cg_rows(lambda V, rows: objective.hvp(curv, V, rows), np.asarray(G), precond, rtol, maxiter)
    steps = tf.transpose(project_out_gauge(tf.constant(res.x.T, dtype=objective.Xa.dtype), objective.spec))
    return steps, res
