"""Credentials for Azure Batch and Blob: a shared key or Entra ID, never shown.

A key is held in a :class:`Secret`, whose ``repr`` and ``str`` are ``'***'``,
so neither a backend's repr, nor a log line, nor an error message can carry
it. Entra ID (``azure-identity``'s ``DefaultAzureCredential``: managed
identity, workload identity, ``az login``, ``AZURE_CLIENT_ID``/``_SECRET``
/``_TENANT_ID``) is used when no key is given::

    credential = batch_credential("myaccount", Secret.from_value(os.environ.get("AZURE_BATCH_ACCOUNT_KEY")))
"""

from __future__ import annotations

from typing import Any

from prefect_hpcviz.viz.errors import InputError

AUTH_MODES = ("auto", "shared_key", "entra")


class Secret:
    """A string that never prints.

    Example:
        >>> key = Secret("c2VjcmV0")
        >>> repr(key), f"{key}", key.reveal()
        ("'***'", '***', 'c2VjcmV0')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def from_value(cls, value: Any) -> Secret | None:
        """A Secret from a str, a pydantic ``SecretStr`` or a Secret; None for empty."""
        if value is None or isinstance(value, Secret):
            return value
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        value = str(value).strip()
        return cls(value) if value else None

    def reveal(self) -> str:
        """The value itself, for the one call that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict) -> Secret:
        return self

    def __reduce__(self):
        raise TypeError("a Secret is not pickled; pass the setting that names it instead")


def check_auth(auth: str, account_name: str | None, key: Secret | None) -> str:
    """The auth mode to use ("shared_key" or "entra"); InputError naming the setting that is missing.

    Example:
        >>> check_auth("auto", "acct", Secret("a2V5")), check_auth("auto", None, None)
        ('shared_key', 'entra')
    """
    if auth not in AUTH_MODES:
        raise InputError(f"auth {auth!r}", "is not an authentication mode", f"use one of {', '.join(AUTH_MODES)}")
    if auth == "auto":
        auth = "shared_key" if key is not None else "entra"
    if auth == "shared_key":
        if key is None:
            raise InputError(
                "account_key", "is needed for auth='shared_key'", "give the Batch account's key (or set its environment variable)"
            )
        if not account_name:
            raise InputError("account_name", "is needed with a shared key", "give the Batch account's name")
    return auth


def batch_credential(auth: str, account_name: str | None, key: Secret | None) -> Any:
    """An azure-core credential for ``BatchClient``: the named key, or ``DefaultAzureCredential``."""
    if check_auth(auth, account_name, key) == "shared_key":
        from azure.core.credentials import AzureNamedKeyCredential

        return AzureNamedKeyCredential(str(account_name), key.reveal())
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise InputError("auth", "Entra ID needs azure-identity", "pip install 'prefect-hpcviz[azure]', or give account_key") from exc
    return DefaultAzureCredential()


__all__ = ["AUTH_MODES", "Secret", "batch_credential", "check_auth"]
