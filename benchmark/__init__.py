"""npasbench: benchmark and reproduction suite for Neural Parameter Allocation Search.

Public entry points::

    from npasbench import create_model, param_report, Method, register_method
"""

from .accounting import ParamReport, param_report
from .budget import Budget
from .contract import BuildRequest, Method, MethodOptions, NPASModel, Phase
from .errors import BudgetError, CheckpointError, ConfigError, DataError, NPASError, RegistryError
from .factory import BuiltModel, create_model
from .plugins import METHODS, create_method, register_method

__version__ = "0.1.0"

__all__ = [
    "Budget", "BudgetError", "BuildRequest", "BuiltModel", "CheckpointError", "ConfigError", "DataError",
    "METHODS", "Method", "MethodOptions", "NPASError", "NPASModel", "ParamReport", "Phase", "RegistryError",
    "create_method", "create_model", "param_report", "register_method",
]
