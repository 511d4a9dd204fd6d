"""Moved to `modbuild.quiet` (the weights CLI, the engine and generate use it too); kept for old imports."""

from modbuild.quiet import THIRD_PARTY, quiet_imports, quiet_third_party

__all__ = ["THIRD_PARTY", "quiet_imports", "quiet_third_party"]
