"""All configuration, in one typed object read from the environment: ``Settings``.

Every variable is documented in the README's configuration tables. A value that
cannot be parsed stops start-up with a ``SettingsError`` naming the variable.
"""

from .config import EXECUTION_PROFILES, Settings
from .environment import SettingsError
from .sections import (
    KubernetesSettings,
    ProgrammaticSettings,
    RuntimeSessionSettings,
    StateSettings,
    TenantLimits,
    TenantSettings,
)

__all__ = ["EXECUTION_PROFILES", "KubernetesSettings", "ProgrammaticSettings",
           "RuntimeSessionSettings", "Settings", "SettingsError", "StateSettings",
           "TenantLimits", "TenantSettings"]
