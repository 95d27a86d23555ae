"""Sign exported models with the model key: ``<name>.sig`` beside each ``<name>.json``.

A signature is :func:`l2fast.models.loading.model_signature`: an HMAC-SHA256 (model key,
:mod:`l2fast.keys`) over the model's name and its manifest's exact bytes, which pin the
ONNX file's SHA-256. A loader given the key (``--model-key-file``, or
``$L2FAST_MODEL_KEY_FILE`` / ``$L2FAST_MODEL_KEY``) refuses a model without a valid one.
``python -m l2fast.export SOURCE... --out DIR --sign-key-file FILE`` signs at export;
:func:`sign_models` (``python -m l2fast.export --sign DIR --sign-key-file FILE``) signs a
folder exported before. Signing vouches for a model: only a pair whose ONNX file matches
its manifest's SHA-256 and whose manifest passes the loader's checks is signed.
"""

from __future__ import annotations

import os
from pathlib import Path

from l2fast._files import write_atomically
from l2fast.errors import ExportError, ModelLoadError
from l2fast.keys import Signer
from l2fast.models.loading import SIGNATURE_SUFFIX, model_signature, model_signer, read_manifest, sha256_bytes

__all__ = ["sign_models", "signature_bytes"]


def signature_bytes(signer: Signer, name: str, manifest_bytes: bytes) -> bytes:
    """The content of ``<name>.sig``: the signature and a newline."""
    return (model_signature(signer, name, manifest_bytes) + "\n").encode("ascii")


def _signed(json_path: Path, signer: Signer) -> bytes:
    """The ``.sig`` content for one exported model, after checking the pair is what it claims."""
    try:
        manifest_bytes, manifest = read_manifest(json_path)
    except ModelLoadError as exc:
        raise ExportError(f"refusing to sign {json_path}: {exc.reason}") from None
    onnx_path = json_path.with_suffix(".onnx")
    try:
        if not onnx_path.resolve().is_relative_to(json_path.parent.resolve()):
            raise ExportError(f"refusing to sign {json_path}: {onnx_path.name} resolves outside the folder")
        digest = sha256_bytes(onnx_path.read_bytes())
    except OSError as exc:
        raise ExportError(f"refusing to sign {json_path}: cannot read {onnx_path.name}: "
                          f"{exc.strerror or exc}") from exc
    if digest != manifest["onnx_sha256"]:
        raise ExportError(f"refusing to sign {json_path}: {onnx_path.name} has SHA-256 {digest}, the manifest "
                          f"pins {manifest['onnx_sha256']}")
    return signature_bytes(signer, json_path.stem, manifest_bytes)


def sign_models(path: str | os.PathLike[str], signer: Signer) -> list[Path]:
    """Write ``<name>.sig`` for every exported model in a folder (or for one manifest).

    Every model is checked before any signature is written: a folder with one model that
    cannot be signed gets no new signature.

    Args:
        path: A folder of ``<name>.json`` + ``<name>.onnx`` pairs, or one ``<name>.json``.
        signer: The model key's signer (:func:`l2fast.keys.load_key` with ``Purpose.MODEL``).

    Returns:
        The signature files written, in name order.

    Raises:
        ExportError: No manifest found, or a model whose manifest fails the loader's
            checks or whose ONNX file does not match it (nothing is signed then).
        ConfigError: ``signer`` is missing or another purpose's.
    """
    checked = model_signer(signer)
    if checked is None:
        raise ExportError("signing needs the model key (--sign-key-file FILE, or $L2FAST_MODEL_KEY_FILE)")
    folder = Path(path)
    manifests = sorted(folder.glob("*.json")) if folder.is_dir() else [folder]
    if not manifests or (not folder.is_dir() and folder.suffix != ".json"):
        raise ExportError(f"{folder}: no exported model to sign (<name>.json + <name>.onnx)")
    signatures = [(p.with_suffix(SIGNATURE_SUFFIX), _signed(p, checked)) for p in manifests]
    for sig_path, data in signatures:
        write_atomically(sig_path, data)
    return [p for p, _ in signatures]
