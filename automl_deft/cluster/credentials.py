"""The credentials table, where the cluster code has always imported it from.

The table itself lives in :mod:`automl_deft.credentials` (the bottom layer), so
the pre-flight can report it without importing the cluster layer.
"""

from automl_deft.credentials import CREDENTIALS, SET, UNSET, Credential, Status, credential_status

__all__ = ["CREDENTIALS", "SET", "UNSET", "Credential", "Status", "credential_status"]
