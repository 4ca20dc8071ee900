"""The exported graphs: a model with its BatchNorms folded into the convs, written as TorchScript and
as ONNX with the run's facts inside each file, and read back the way a user reads them.

* TorchScript: ``torch.jit.script`` (the residual writes keep their channels_last branch), then
  ``torch.jit.freeze``; the facts are the extra file ``prunerepro.json``
  (``torch.jit.load(path, _extra_files={"prunerepro.json": ""})``).
* ONNX: opset ``OPSET`` (17: ONNX Runtime >= 1.12, TensorRT >= 8.6 read it), residual-stream
  placements as Gathers (``_GatherPlace``), batch, height and width dynamic, input ``input`` (float32 NCHW), output ``logits``; the facts are the model's
  ``metadata_props``, one JSON value per key
  (``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map``). Written by torch's
  TorchScript-based exporter (``dynamo=False``): it needs only the ``onnx`` package, and took
  2.3 s for a compact ResNet-50 on 2 cores where the torch.export-based one (which also needs
  onnxscript) took 27 s. torch deprecates it; the graphs are checked on every export.
"""
from __future__ import annotations

import io
import json
import warnings

import torch
from torch import nn

from repro.models.fold import fold_bn
from repro.models import DENSE
from repro.models.common import StreamStart, StreamWrite
from repro.models.graph import streams

from .source import ExportError

OPSET = 17
FACTS_FILE = "prunerepro.json"  # TorchScript extra file holding the facts
INPUT, OUTPUT = "input", "logits"


def require(formats: tuple[str, ...]) -> None:
    """One line when a package a format needs is missing (before anything is written)."""
    if "onnx" not in formats:
        return
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            raise ExportError(f"{name} is not installed: the onnx format needs it "
                              "(pip install 'prunerepro[export]'), or use --format torchscript") from None


def folded(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every BatchNorm folded into its conv (``models.fold.fold_bn``)."""
    return fold_bn(model).eval()


class _GatherPlace(nn.Module):
    """A scattering ``StreamWrite`` (with ``stream``) or ``StreamStart`` (without) for the ONNX
    graph: the narrow tensor gets one zero channel, each stream channel picks its source channel
    (Gather), then the add. torch's exporter writes ``index_add`` / ``index_copy`` as
    ScatterElements, which ONNX Runtime's CPU provider runs element by element: the compact
    ResNet-50 at 30% then ran no faster than the dense one (0.90-1.02x, 224 px, 1 thread); with
    the Gather 1.26x, in the same interleaved rounds. Exact: only zeros are added or placed."""

    def __init__(self, index: torch.Tensor, stream: int):
        super().__init__()
        source = torch.full((stream,), index.numel(), dtype=torch.long)
        source[index.cpu()] = torch.arange(index.numel())
        self.register_buffer("source", source)

    def forward(self, x: torch.Tensor, stream: torch.Tensor | None = None) -> torch.Tensor:
        placed = nn.functional.pad(x, (0, 0, 0, 0, 0, 1)).index_select(1, self.source)
        return placed if stream is None else stream + placed


def _gathered(model: nn.Module, arch: str) -> nn.Module:
    """``model`` (changed in place) with every scattering stream write / start as ``_GatherPlace``."""
    spec = getattr(model, "spec", DENSE)
    width = {s.name: spec.stream(s.name, s.width) for s in streams(arch)}
    for name, m in list(model.named_modules()):
        if isinstance(m, StreamWrite) and m.scatter:
            new = _GatherPlace(m.index, width[name.split(".")[0]])
        elif isinstance(m, StreamStart) and m.scatter:
            new = _GatherPlace(m.index, m.stream)
        else:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, new)
    return model


def torchscript_bytes(model: nn.Module, facts: dict) -> bytes:
    """The folded model, scripted and frozen, with the facts as an extra file."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit's deprecation notices: TorchScript is what was asked for
        warnings.simplefilter("ignore", DeprecationWarning)
        frozen = torch.jit.freeze(torch.jit.script(folded(model)))
        torch.jit.save(frozen, buf, _extra_files={FACTS_FILE: json.dumps(facts, sort_keys=True)})
    return buf.getvalue()


def onnx_bytes(model: nn.Module, facts: dict, example: torch.Tensor) -> bytes:
    """The folded model as ONNX (opset OPSET, dynamic batch and size) with the facts as metadata."""
    import onnx
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():  # the legacy exporter's notices: see above
        warnings.simplefilter("ignore")
        torch.onnx.export(_gathered(folded(model), facts["arch"]), (example,), buf, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in sorted(facts.items()):
        proto.metadata_props.add(key=k, value=json.dumps(v))
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def load_torchscript(data: bytes) -> tuple[torch.jit.ScriptModule, dict]:
    """(the module, its facts) as a user gets them from the file's bytes."""
    extra = {FACTS_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(data), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra[FACTS_FILE])


def ort_session(data: bytes, threads: int, provider: str = "CPUExecutionProvider"):
    """An ONNX Runtime session on the file's bytes, ``threads`` intra-op threads, one inter-op."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3  # errors only: its warnings would fill the one-line contract
    return ort.InferenceSession(data, sess_options=opts, providers=[provider])


def onnx_facts(session) -> dict:
    return {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
