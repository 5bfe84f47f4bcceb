"""newtonjax: second-order optimization in JAX.

Curvature primitives on pytrees (Hessian-vector, Gauss–Newton and Jacobian products,
dense Hessians for small problems, diagonal and spectral estimates, Taylor models,
critical-point classification), linear algebra on curvature operators
(:mod:`newtonjax.linalg`), Newton-type update rules as optax transforms, and
jittable, vmappable solve loops.
"""

from newtonjax import linalg
from newtonjax._critical import (
    CriticalPoint,
    CriticalPointKind,
    classify_critical_point,
    critical_point_code,
)
from newtonjax._curvature import (
    GGNOperator,
    HessianOperator,
    TaylorModel,
    gauss_newton_operator,
    ggn_operator,
    ggn_vp,
    hessian_diag,
    hessian_matrix,
    hessian_operator,
    hvp,
    jacobian_matrix,
    jacobian_tvp,
    jacobian_vp,
    jtj_vp,
    materialize,
    taylor2,
)
from newtonjax._objectives import (
    CompositeObjective,
    LeastSquaresObjective,
    composite_objective,
    least_squares_objective,
)
from newtonjax._solve import METHODS, SolveResult, Status, least_squares, minimize
from newtonjax._spectrum import (
    SpectralDensity,
    hessian_eigenvalues,
    hessian_spectral_density,
    hessian_trace,
)
from newtonjax._transforms._gauss_newton import (
    GaussNewtonInfo,
    ScaleByGaussNewtonState,
    gauss_newton,
    scale_by_gauss_newton,
)
from newtonjax._transforms._hessian_free import (
    HessianFreeInfo,
    ScaleByHessianFreeState,
    hessian_free,
    scale_by_hessian_free,
)
from newtonjax._transforms._levenberg_marquardt import (
    LevenbergMarquardtInfo,
    ScaleByLevenbergMarquardtState,
    levenberg_marquardt,
    scale_by_levenberg_marquardt,
)
from newtonjax._transforms._newton import NewtonInfo, ScaleByNewtonState, newton, scale_by_newton
from newtonjax._transforms._trust_region import (
    ScaleByTrustRegionState,
    TrustRegionInfo,
    scale_by_trust_region,
    trust_region,
)
from newtonjax._uncertainty import (
    LaplacePosterior,
    LaplacePredictive,
    laplace,
    parameter_covariance,
)
from newtonjax._version import __version__

__all__ = [
    "__version__",
    # objectives
    "CompositeObjective",
    "LeastSquaresObjective",
    "composite_objective",
    "least_squares_objective",
    # curvature
    "GGNOperator",
    "HessianOperator",
    "TaylorModel",
    "gauss_newton_operator",
    "ggn_operator",
    "ggn_vp",
    "hessian_diag",
    "hessian_matrix",
    "hessian_operator",
    "hvp",
    "jacobian_matrix",
    "jacobian_tvp",
    "jacobian_vp",
    "jtj_vp",
    "materialize",
    "taylor2",
    # critical points
    "CriticalPoint",
    "CriticalPointKind",
    "classify_critical_point",
    "critical_point_code",
    # spectrum
    "SpectralDensity",
    "hessian_eigenvalues",
    "hessian_spectral_density",
    "hessian_trace",
    # linear algebra
    "linalg",
    # update rules
    "NewtonInfo",
    "ScaleByNewtonState",
    "newton",
    "scale_by_newton",
    "ScaleByTrustRegionState",
    "TrustRegionInfo",
    "scale_by_trust_region",
    "trust_region",
    "GaussNewtonInfo",
    "ScaleByGaussNewtonState",
    "gauss_newton",
    "scale_by_gauss_newton",
    "LevenbergMarquardtInfo",
    "ScaleByLevenbergMarquardtState",
    "levenberg_marquardt",
    "scale_by_levenberg_marquardt",
    "HessianFreeInfo",
    "ScaleByHessianFreeState",
    "hessian_free",
    "scale_by_hessian_free",
    # solve loops
    "METHODS",
    "SolveResult",
    "Status",
    "least_squares",
    "minimize",
    # curvature at the solution
    "LaplacePosterior",
    "LaplacePredictive",
    "laplace",
    "parameter_covariance",
]
