"""torchvision's released ImageNet ResNet weights as a starting point, offline.

    torchvision:resnet50                           the V1 file in torch's hub cache
    torchvision:/path/to/resnet50-0676ba61.pth     an explicit file

The papers' ImageNet baselines start from these (the official SFP script loads the 90-epoch
PyTorch model), and our ImageNet ResNets use torchvision's state-dict keys, so the file loads
unchanged. Compute nodes usually have no internet: nothing is downloaded here. A missing file is
named in one line together with the command that fetches it on a machine that has internet.

The hash check is torchvision's own (``torch.hub.download_url_to_file(..., hash_prefix)``): the
sha256 of the file must start with the hex digits after the last '-' of its name.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

PREFIX = "torchvision:"
URL_BASE = "https://download.pytorch.org/models/"
# ResNet{18,34,50,101}_Weights.IMAGENET1K_V1: the weights the papers used (V2 is a newer recipe).
V1_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
}
# torch.hub's HASH_REGEX, anchored to the end of the name: "resnet50-0676ba61.pth" -> 0676ba61.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.[^.-]+$")
_MIN_PREFIX = 8  # torchvision's names carry 8 hex digits; fewer would verify next to nothing


class WeightsError(ValueError):
    """A torchvision weights spec that cannot be used; the message is one line."""


class WeightsMissing(WeightsError):
    """The file is not where it is expected (the message says where and how to get it)."""


class WeightsHashMismatch(WeightsError):
    """The file's sha256 does not start with the prefix in its name."""


def is_spec(value: str) -> bool:
    """True for 'torchvision:...' (what prune.init_from hands to this module instead of a path)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def checkpoints_dir() -> Path:
    """Where torch.hub keeps downloaded weights: $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting
    to $XDG_CACHE_HOME/torch and that to ~/.cache/torch (torch.hub.get_dir() decides)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_hint(arch: str, folder: Path) -> str:
    """The commands that put the V1 file of `arch` into `folder` on a machine with internet."""
    name = V1_FILES[arch]
    return (f"on a machine with internet run `python -c \"import torchvision; "
            f"torchvision.models.{arch}(weights='IMAGENET1K_V1')\"` (it saves to that machine's "
            f"~/.cache/torch/hub/checkpoints/) or `curl -fLO {URL_BASE}{name}`, then copy {name} "
            f"to {folder} here (or set TORCH_HOME to a folder whose hub/checkpoints/ holds it)")


def _known() -> str:
    return ", ".join(V1_FILES)


def arch_of(spec: str) -> str:
    """The model a spec names: 'torchvision:resnet50' -> resnet50; for a file, the part of its name
    before the hash ('.../resnet50-0676ba61.pth' -> resnet50)."""
    body = _body(spec)
    if body in V1_FILES:
        return body
    return Path(body).name.rsplit("-", 1)[0]


def _body(spec: str) -> str:
    if not is_spec(spec):
        raise WeightsError(f"'{spec}' is not a torchvision weights spec (expected "
                           f"'{PREFIX}ARCH' with ARCH one of {_known()}, or '{PREFIX}/path/to/FILE.pth')")
    body = spec[len(PREFIX):].strip()
    if not body:
        raise WeightsError(f"'{spec}' names no model (expected '{PREFIX}ARCH', ARCH one of {_known()})")
    return body


def _is_path(body: str) -> bool:
    return "/" in body or body.endswith((".pth", ".pt"))


def resolve(spec: str) -> Path:
    """The verified weights file a spec names; WeightsError (one line) when it is unusable."""
    body = _body(spec)
    if _is_path(body):
        path = Path(body).expanduser()
        if not path.is_file():
            known = {v: k for k, v in V1_FILES.items()}.get(path.name)
            hint = f"; {fetch_hint(known, path.parent)}" if known else ""
            raise WeightsMissing(f"{spec}: {path} does not exist{hint}")
    elif body in V1_FILES:
        path = checkpoints_dir() / V1_FILES[body]
        if not path.is_file():
            raise WeightsMissing(f"{spec}: expected {path}, which does not exist; "
                                 f"{fetch_hint(body, path.parent)}")
    else:
        raise WeightsError(f"{spec}: no released weights known for '{body}' (known: {_known()}; "
                           f"or give a file: '{PREFIX}/path/to/NAME-HASH.pth')")
    verify_hash(path)
    return path


def verify_hash(path: Path) -> str:
    """Check sha256(file) against the hex prefix in the file name, as torchvision does after a
    download; returns the full digest."""
    m = _HASH_IN_NAME.search(path.name)
    if m is None or len(m.group(1)) < _MIN_PREFIX:
        raise WeightsError(f"{path}: the name carries no hash to verify the file by (torchvision's "
                           f"names end in -<first {_MIN_PREFIX}+ hex digits of its sha256>, e.g. "
                           f"{V1_FILES['resnet50']}); keep the name it was published under")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if not digest.startswith(m.group(1)):
        raise WeightsHashMismatch(f"{path}: sha256 is {digest[:16]}..., its name says {m.group(1)}...: "
                                  f"the file is truncated or not the one torchvision publishes; "
                                  f"fetch it again")
    return digest


def load_state_dict(spec: str) -> dict[str, torch.Tensor]:
    """The state dict of a verified weights file, with torchvision's keys, on the CPU."""
    from repro.io import dense_state_dict, load_torch_file
    path = resolve(spec)
    return dense_state_dict(load_torch_file(path, spec, WeightsError), f"{spec} ({path})", WeightsError)


def load_model(spec: str, arch: str | None = None, num_classes: int | None = None) -> torch.nn.Module:
    """One of our dense ImageNet ResNets holding the weights `spec` names. `arch`, when given, must
    be the spec's model; the head size follows the file unless `num_classes` asks otherwise."""
    from repro.models import build_model
    from repro.io import load_dense_weights
    named = arch_of(spec)
    if arch is not None and named != arch and named in V1_FILES:
        raise WeightsError(f"{spec} holds a {named}, this run trains a {arch}")
    if arch is None and named not in V1_FILES:
        raise WeightsError(f"{spec}: cannot tell the model from the file name; name the arch "
                           f"(one of {_known()})")
    state = load_state_dict(spec)
    fc = state.get("fc.weight")
    head = fc.shape[0] if fc is not None else None
    if num_classes is not None and head is not None and head != num_classes:
        raise WeightsError(f"{spec} has a {head}-class head, this run needs {num_classes}")
    model = build_model(arch or named, num_classes=head or num_classes)
    load_dense_weights(model, state, spec, WeightsError)
    return model
