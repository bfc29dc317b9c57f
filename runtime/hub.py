"""Hugging Face Hub: resolve ``ORG/NAME`` to a cached model folder, and push an exported folder.

``huggingface_hub`` is optional (``pip install 'colbert-onnx[hub]'``) and imported inside the
functions only. Downloads go through ``snapshot_download`` and its cache (``HF_HUB_CACHE``), so a
model fetched once loads offline afterwards, also with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ModelFolderError
from .model_folder import open_model_folder

_INSTALL_HINT = "pip install 'colbert-onnx[hub]' (or pip install huggingface_hub)"


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ModelFolderError(f"loading or pushing hub models needs huggingface_hub: {_INSTALL_HINT}") from exc
    return huggingface_hub


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") != 1


def resolve_model_folder(
    name_or_path: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """A local model folder as is, or hub repo ``ORG/NAME`` downloaded into (or found in) the HF cache."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return local
    name = str(name_or_path)
    if isinstance(name_or_path, Path) or _looks_like_path(name):
        raise ModelFolderError(f"{name!r} is neither a local model folder nor a hub id of the form ORG/NAME")
    hub = _hub()
    from huggingface_hub import errors

    try:
        path = hub.snapshot_download(
            name,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            library_name="colbert-onnx",
        )
    except errors.LocalEntryNotFoundError as exc:
        cache = cache_dir or hub.constants.HF_HUB_CACHE
        raise ModelFolderError(
            f"{name} (revision {revision or 'main'}) is not in the Hugging Face cache at {cache} and the hub "
            "could not be reached (offline, HF_HUB_OFFLINE=1 or local_files_only). Connect once to download it, "
            f"or run `hf download {name}` on a machine with network and copy that cache here (HF_HUB_CACHE), "
            "or pass the path of a local model folder instead."
        ) from exc
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as exc:
        raise ModelFolderError(
            f"{name} (revision {revision or 'main'}) was not found on the hub (or needs a token): {exc}"
        ) from exc
    except (errors.HfHubHTTPError, OSError) as exc:
        raise ModelFolderError(f"downloading {name} from the hub failed: {exc}") from exc
    return Path(path)


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload colbert-onnx model folder",
) -> str:
    """Upload an exported model folder to hub repo `repo_id` (created if missing); returns the commit URL."""
    model = open_model_folder(folder)  # refuse to upload something the runtime could not load
    if _looks_like_path(repo_id):
        raise ModelFolderError(f"repo id must look like ORG/NAME, got {repo_id!r}")
    hub = _hub()
    api = hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(model.path),
            repo_id=repo_id,
            repo_type="model",
            revision=revision,
            commit_message=commit_message,
        )
    except Exception as exc:  # offline, no token, no rights, network: huggingface_hub's own errors
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelFolderError(f"could not upload {model.path} to {repo_id}: {type(exc).__name__}: {first}") from exc
    return str(getattr(commit, "commit_url", commit))
