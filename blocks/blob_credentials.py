"""Azure Blob credentials from prefect-azure's ``AzureBlobStorageCredentials`` block.

Flows that read or write ``az://`` URLs take a ``storage_credentials``
parameter: the block itself or the name it was saved under. Only the block
(whose secrets Prefect shows as ``**********``) or its name travels through
flow-run parameters; :func:`blob_storage_options` turns it into adlfs options
inside the task that opens the data, so no key reaches the run's parameters,
logs or artifacts.

Examples:
    Save the block once (or in the Prefect UI: Blocks -> Azure Blob Storage Credentials):

    >>> from prefect_azure import AzureBlobStorageCredentials                # doctest: +SKIP
    >>> AzureBlobStorageCredentials(connection_string=conn).save("runs")      # doctest: +SKIP

    and pass its name to a flow:

    >>> visualize_simulation("az://runs/ocean.zarr", storage_credentials="runs",
    ...                      copy_to="az://runs/reduced")                     # doctest: +SKIP

    What a block becomes (an account URL alone uses DefaultAzureCredential):

    >>> blob_storage_options(AzureBlobStorageCredentials(
    ...     account_url="https://mydata.blob.core.windows.net"))              # doctest: +SKIP
    {'account_name': 'mydata', 'account_host': 'mydata.blob.core.windows.net', 'anon': False}
"""

from __future__ import annotations

from typing import Any, Union
from urllib.parse import urlsplit, urlunsplit

from prefect_hpcviz.viz.errors import InputError

try:
    from prefect_azure import AzureBlobStorageCredentials
except ImportError:  # the azure extra is missing: a name can still be given, and fails clearly
    AzureBlobStorageCredentials = None  # type: ignore[assignment,misc]

#: What a ``storage_credentials`` parameter accepts: a saved block's name or the block. ``str``
#: comes first: Prefect validates flow parameters, and the block's "before" validator fails on a string.
BlobCredentials = Union[str, AzureBlobStorageCredentials] if AzureBlobStorageCredentials else str

_BLOB_PROTOCOLS = ("az", "abfs", "abfss")
_SAVE_IT = ("save it once, e.g. AzureBlobStorageCredentials(connection_string=...).save('NAME') from "
            "prefect_azure (or in the Prefect UI: Blocks -> Azure Blob Storage Credentials), "
            "then pass that name, or pass the block itself")


def load_blob_credentials(credentials: Any) -> Any:
    """The ``AzureBlobStorageCredentials`` block given, or the saved one of that name.

    Raises:
        InputError: no block is saved under that name, or prefect-azure is missing.

    Example:
        >>> load_blob_credentials("runs").account_url                         # doctest: +SKIP
        'https://mydata.blob.core.windows.net'
    """
    if AzureBlobStorageCredentials is None:
        raise InputError(str(credentials), "Azure Blob credentials need prefect-azure, which is not installed",
                         "pip install 'prefect-hpcviz[azure]'")
    if isinstance(credentials, AzureBlobStorageCredentials):
        return credentials
    if not isinstance(credentials, str) or not credentials.strip():
        raise InputError(repr(credentials), "not an AzureBlobStorageCredentials block or a saved block's name",
                         _SAVE_IT)
    try:
        return AzureBlobStorageCredentials.load(credentials)
    except ValueError as error:  # Prefect: "Unable to find block document named ..."
        raise InputError(credentials, f"no AzureBlobStorageCredentials block is saved under this name ({error})",
                         _SAVE_IT) from None


def blob_storage_options(credentials: Any) -> dict[str, Any]:
    """adlfs storage options (for ``az://`` URLs) from a block or a saved block's name; ``{}`` for None.

    A connection string is passed as it is. An account URL gives the
    account's name and host, with the service principal's ``client_id``,
    ``tenant_id`` and ``client_secret`` when the block has them, else
    ``anon=False`` (adlfs then uses DefaultAzureCredential: managed identity,
    workload identity, ``az login``); a SAS query on the URL becomes
    ``sas_token``. The result holds secrets: pass it to fsspec, never log it.

    Example:
        >>> blob_storage_options(None)
        {}
        >>> blob_storage_options("runs")                                       # doctest: +SKIP
        {'connection_string': 'DefaultEndpointsProtocol=https;AccountName=mydata;...'}
    """
    if credentials is None:
        return {}
    block = load_blob_credentials(credentials)
    if block.connection_string is not None:
        return {"connection_string": block.connection_string.get_secret_value()}
    options = account_url_options(block.account_url, _block_label(block, credentials))
    if block.client_id:
        options.update(client_id=block.client_id, tenant_id=block.tenant_id,
                       client_secret=block.client_secret.get_secret_value())
    elif "sas_token" not in options:
        options["anon"] = False
    return options


def account_url_options(account_url: str, label: str = "account_url") -> dict[str, Any]:
    """``account_name`` and ``account_host`` (and ``sas_token``) for adlfs from a Blob account URL.

    Example:
        >>> account_url_options("https://mydata.blob.core.windows.net/")
        {'account_name': 'mydata', 'account_host': 'mydata.blob.core.windows.net'}
        >>> account_url_options("https://mydata.blob.core.chinacloudapi.cn?sv=2024&sig=x")["sas_token"]
        'sv=2024&sig=x'
    """
    parts = urlsplit(str(account_url))
    if parts.scheme != "https" or not parts.hostname or parts.path.strip("/"):
        shown = urlunsplit(parts._replace(query="SAS")) if parts.query else str(account_url)  # a SAS is a secret
        raise InputError(label, f"account_url {shown!r} is not https://ACCOUNT.blob.core.windows.net",
                         "use the storage account's https endpoint, or a connection string (emulators such as "
                         "Azurite are reached over http with a connection string)")
    options: dict[str, Any] = {"account_name": parts.hostname.split(".")[0], "account_host": parts.netloc}
    if parts.query:
        options["sas_token"] = parts.query
    return options


def is_blob_url(url: str) -> bool:
    """Whether ``url`` is in Azure Blob (Data Lake) storage, i.e. read through adlfs.

    Example:
        >>> is_blob_url("az://runs/ocean.zarr"), is_blob_url("/scratch/ocean.zarr")
        (True, False)
    """
    protocol, separator, _ = str(url).partition("://")
    return bool(separator) and protocol.lower() in _BLOB_PROTOCOLS


def _block_label(block: Any, given: Any) -> str:
    name = getattr(block, "_block_document_name", None) or (given if isinstance(given, str) else None)
    return f"AzureBlobStorageCredentials block {name!r}" if name else "AzureBlobStorageCredentials block"


__all__ = ["AzureBlobStorageCredentials", "BlobCredentials", "account_url_options", "blob_storage_options",
           "is_blob_url", "load_blob_credentials"]
