"""Weights references → local files: a file, a checkpoint folder, a training run, a registry name or a Hub repo.

Hub downloads go through `huggingface_hub` only, so its cache, `HF_HUB_OFFLINE`, `HF_ENDPOINT` and tokens apply.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from huggingface_hub import HfApi, constants, get_hf_file_metadata, get_token, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from torch import Tensor

from segrefine.errors import SegrefineError, SettingError
from segrefine.hub.files import (
    CONFIG_NAME, RUN_BEST_DIR, RUN_LAST_DIR, WEIGHTS_NAME, check_safetensors, load_state, read_config,
)  # fmt: skip
from segrefine.hub.registry import BackboneEntry, embedded_path, is_repo_id, load_registry

ACCEPTED = (
    "a .safetensors file with config.json beside it, a checkpoint folder (config.json + model.safetensors), "
    "a training run folder (checkpoints/best or checkpoints/last), a registry name (see `segrefine weights list`) "
    "or a Hub repo id owner/name[@revision]"
)


def split_hub_id(text: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) of a Hub reference owner/name[@revision], or None when `text` is not one."""
    repo, at, revision = text.partition("@")
    if not is_repo_id(repo) or (at and (not revision or any(c.isspace() or c == "@" for c in revision))):
        return None
    return repo, revision or None


class HubUnreachable(SegrefineError):
    """The Hub cannot be reached (offline mode, or no connection) and the cache lacks what is needed."""


REACH_TIMEOUT = 10.0  # seconds for the one request that checks the Hub answers, before a download


def transport_errors() -> tuple[type[Exception], ...]:
    """Connection failures (no route, refused, timed out) of the HTTP client under huggingface_hub: httpx2, httpx or
    requests, by its version. Only clients already imported count, so nothing is imported here."""
    names = (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError"),
             ("requests", "Timeout"))  # fmt: skip
    found = (getattr(sys.modules.get(module), name, None) for module, name in names)
    return tuple(error for error in found if isinstance(error, type) and issubclass(error, Exception))


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a reference's files are on this machine."""

    ref: str
    config_path: Path
    weights_path: Path


def resolve(ref: str | Path, *, token: str | None = None, cache_dir: str | Path | None = None) -> ResolvedWeights:
    """Resolve a weights reference to local `config.json` + weights files, downloading from the Hub if needed."""
    text = str(ref)
    if not text.strip():  # Path("") is the current folder: say what is wrong instead of talking about "."
        raise SegrefineError(f"empty weights reference: expected {ACCEPTED}")
    if Path(text).expanduser().exists():
        return resolve_local(text)
    entry = load_registry().model(text)
    if entry is not None:
        local = embedded_path(entry)
        if local is not None and local.is_file():  # shipped inside the package: no network
            _verify_sha256(local, entry.sha256, f"registry entry {text}")
            return _checked(text, local.with_name(CONFIG_NAME), local)
        if not entry.repo:
            raise SegrefineError(
                f"registry entry {text} is embedded in segrefine but its file {local} is missing: reinstall segrefine"
            )
        return _resolve_hub(text, entry.repo, entry.revision, entry.file, entry.sha256, token=token, cache_dir=cache_dir)
    hub_id = split_hub_id(text)
    if hub_id:
        return _resolve_hub(text, *hub_id, WEIGHTS_NAME, None, token=token, cache_dir=cache_dir)
    if _looks_like_path(text):
        raise SegrefineError(f"weights not found: there is no file or folder {text}")
    raise SegrefineError(
        f"unknown weights reference {text!r}: expected {ACCEPTED}; fetch Hub weights with `segrefine weights pull REF`"
    )


def resolve_local(ref: str | Path) -> ResolvedWeights:
    """Resolve a local reference only: a .safetensors file, a checkpoint folder or a training run folder."""
    path = Path(ref).expanduser()
    if path.is_file():
        check_safetensors(path)
        return _checked(str(ref), path.with_name(CONFIG_NAME), path)
    if not path.is_dir():
        raise SegrefineError(f"weights not found: there is no file or folder {ref}")
    for folder in (path, path / RUN_BEST_DIR, path / RUN_LAST_DIR):
        if (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file():
            return _checked(str(ref), folder / CONFIG_NAME, folder / WEIGHTS_NAME)
    raise SegrefineError(
        f"{path} is neither a checkpoint folder ({CONFIG_NAME} + {WEIGHTS_NAME}) nor a training run folder "
        f"({RUN_BEST_DIR}/ or {RUN_LAST_DIR}/ holding them)"
    )


def pull(ref: str, *, token: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """Fill the cache for `ref` (checkpoint or registered ImageNet backbone repo); returns the local folder or file."""
    hub_id = split_hub_id(ref)
    backbone = load_registry().backbone(hub_id[0]) if hub_id and not Path(ref).exists() else None
    if backbone is not None:
        return _download_backbone(backbone, hub_id[1], token=token, cache_dir=cache_dir)
    return resolve(ref, token=token, cache_dir=cache_dir).weights_path.parent


def fetch_backbone(
    repo_id: str, revision: str | None = None, *, token: str | None = None, cache_dir: str | Path | None = None
) -> dict[str, Tensor]:
    """The state dict of an ImageNet classifier on the Hub (e.g. `timm/resnet18.a1_in1k`), from `model.safetensors`.

    `repo_id` may also be a registered arch name (`resnet18`). Registered backbones use the registry's revision and
    file, and its sha256 where one is recorded.
    """
    entry = load_registry().backbone(repo_id) or BackboneEntry(
        arch=repo_id, variants=(), repo=repo_id, revision=constants.DEFAULT_REVISION, file=WEIGHTS_NAME, sha256=None
    )
    return load_state(_download_backbone(entry, revision, token=token, cache_dir=cache_dir))


def _download_backbone(
    entry: BackboneEntry, revision: str | None, *, token: str | None, cache_dir: str | Path | None
) -> Path:
    revision = revision or entry.revision
    path = _download(entry.repo, entry.file, revision, ref=f"{entry.repo}@{revision}", token=token, cache_dir=cache_dir)
    if entry.sha256 is not None and revision == entry.revision:
        _verify_sha256(path, entry.sha256, f"backbone {entry.repo}@{revision}")
    return path


def _resolve_hub(
    ref: str,
    repo_id: str,
    revision: str | None,
    filename: str,
    sha256: str | None,
    *,
    token: str | None,
    cache_dir: str | Path | None,
) -> ResolvedWeights:
    revision = revision or constants.DEFAULT_REVISION
    folder = filename.rpartition("/")[0]
    config = _download(repo_id, f"{folder}/{CONFIG_NAME}" if folder else CONFIG_NAME, revision, ref=ref, token=token, cache_dir=cache_dir)
    # The config's snapshot folder is named by its commit: pin the weights to that same commit.
    commit = config.parents[folder.count("/") + 1 if folder else 0].name
    weights = _download(repo_id, filename, commit, ref=ref, token=token, cache_dir=cache_dir)
    if sha256 is not None:
        _verify_sha256(weights, sha256, f"registry entry {ref} ({repo_id}@{revision})")
    return _checked(ref, config, weights)


def _download(
    repo_id: str, filename: str, revision: str, *, ref: str, token: str | None, cache_dir: str | Path | None
) -> Path:
    from segrefine import __version__

    what = f"{filename} of {repo_id}@{revision}"
    cache = cache_dir or constants.HF_HUB_CACHE
    unreachable = (
        f"cannot reach the Hub at {constants.ENDPOINT} to fetch {what}, and it is not in the cache ({cache}): "
        f"check the connection and HF_ENDPOINT, or run `segrefine weights pull {ref}` when online"
    )
    if not _reachable(repo_id, filename, revision, token, cache_dir):
        raise HubUnreachable(unreachable)
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                library_name="segrefine",
                library_version=__version__,
            )
        )
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise HubUnreachable(
                f"{what} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE=1 forbids downloading it: "
                f"unset HF_HUB_OFFLINE, or run `segrefine weights pull {ref}` while online"
            ) from None
        raise HubUnreachable(unreachable) from None
    except EntryNotFoundError:
        raise SegrefineError(f"Hub repo {repo_id}@{revision} has no {filename}: it is not a segrefine checkpoint") from None
    except (RepositoryNotFoundError, RevisionNotFoundError, HfHubHTTPError, OfflineModeIsEnabled) as e:
        raise hub_error(e, repo_id, revision) from None


def _reachable(repo_id: str, filename: str, revision: str, token: str | None, cache_dir: str | Path | None) -> bool:
    """False when a file that is not cached cannot be fetched because the Hub does not answer: then `_download` fails
    at once, where hf_hub_download would retry the connection five times with back-off (half a minute, with a warning
    per try) before it gives up."""
    if constants.HF_HUB_OFFLINE or isinstance(try_to_load_from_cache(repo_id, filename, cache_dir, revision), str):
        return True  # offline: the cache answers; cached: hf_hub_download falls back to it without retrying
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), token=token, timeout=REACH_TIMEOUT)
    except transport_errors():
        return False
    except Exception:  # noqa: BLE001 - the Hub answered (e.g. 404): the download itself reports what it said
        return True
    return True


def hub_error(error: Exception, repo_id: str, revision: str | None = None) -> SegrefineError:
    """One line for a failed Hub call on `repo_id`."""
    if isinstance(error, RevisionNotFoundError):
        return SettingError(f"revision {revision!r} not found in Hub repo {repo_id}")
    if isinstance(error, GatedRepoError):
        return SettingError(f"Hub repo {repo_id} is gated: accept its terms on the Hub and pass a token (`token` or HF_TOKEN)")
    if isinstance(error, RepositoryNotFoundError):
        return SettingError(
            f"Hub repo {repo_id} not found at {constants.ENDPOINT} (a private repo needs a token: `token` or HF_TOKEN)"
        )
    if isinstance(error, OfflineModeIsEnabled):
        return SettingError(f"cannot reach the Hub for {repo_id}: HF_HUB_OFFLINE=1 is set; unset it to go online")
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return SettingError(
            f"the Hub refused access to {repo_id} (HTTP {status}): pass a valid token with `token` or set HF_TOKEN"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return SettingError(f"Hub request for {repo_id} failed: {first}")


def check_push_target(repo_id: str) -> None:
    """A push needs an owner/name repo id and the Hub not switched off."""
    if not is_repo_id(repo_id):
        raise SettingError(f"Hub repo id must be owner/name (use `revision` for a branch), got {repo_id!r}")
    if constants.HF_HUB_OFFLINE:
        raise SegrefineError("cannot push while HF_HUB_OFFLINE=1 is set: unset it to upload")


@contextmanager
def pushing(repo_id: str, revision: str | None, token: str | None, private: bool | None) -> Iterator[HfApi]:
    """An HfApi to publish to `repo_id` at `revision` (the repo and the branch made when missing), once a token is at
    hand; its Hub calls fail as one line: what the Hub answered, or that it cannot be reached."""
    check_push_target(repo_id)
    if token is None and get_token() is None:
        raise SettingError(
            "pushing to the Hub needs a Hugging Face token with write access: pass `token`, set HF_TOKEN, or log in "
            "once with `hf auth login`"
        )
    from segrefine import __version__

    api = HfApi(token=token, library_name="segrefine", library_version=__version__)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        yield api
    except (HfHubHTTPError, OfflineModeIsEnabled) as e:
        raise hub_error(e, repo_id, revision) from None
    except transport_errors() as e:
        raise SegrefineError(
            f"cannot reach the Hub at {constants.ENDPOINT} to push {repo_id} ({type(e).__name__}): check the "
            "connection and HF_ENDPOINT, then push again"
        ) from None


def _verify_sha256(path: Path, expected: str, what: str) -> None:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest() if sys.version_info >= (3, 11) else _sha256_py310(f)
    if digest != expected:
        raise SegrefineError(
            f"sha256 of {path} ({digest}) does not match {what} ({expected}): the download is corrupt or "
            "the repo changed; remove it from the Hugging Face cache and pull again"
        )


def _sha256_py310(f: BinaryIO) -> str:
    """hashlib.file_digest's work, which Python 3.10 lacks."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _checked(ref: str, config: Path, weights: Path) -> ResolvedWeights:
    if not config.is_file():
        raise SegrefineError(f"{weights} has no {CONFIG_NAME} beside it (expected {config})")
    read_config(config)
    check_safetensors(weights)
    return ResolvedWeights(ref, config, weights)


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1 or Path(text).suffix != ""
