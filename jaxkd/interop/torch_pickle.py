"""Reading PyTorch checkpoints without running pickled code, and describing what a state dict holds.

The original project's ``best_model.pth`` is ``torch.save({'model_state_dict': sd, 'config': <its Config>,
'epoch': ..., ...})``: beside the tensors it pickles objects of that project's own classes, which are not installed
here. ``torch.load(weights_only=True)`` refuses such files; ``weights_only=False`` would import those classes (and
run whatever a pickle asks for). :func:`load_torch_file` reads them with torch's own zip reader and a restricted
unpickler (:class:`RestrictedUnpickler`): a global is looked up in a fixed allow-list of tensor-rebuild functions,
dtypes and plain containers, built from objects that are already imported; every other global becomes an inert
:class:`Unloaded` placeholder class that records its name and swallows its arguments and state. Nothing is ever
imported by name or called from the pickle except the allow-listed functions, so a malicious ``__reduce__``
(``os.system``, ``exec``, ...) loads as a placeholder and does nothing.

torch is imported lazily (only to read ``.pth`` files); ``.safetensors`` files need only the ``safetensors``
package. Importing this module imports neither.
"""

from __future__ import annotations

import _compat_pickle
import collections
import pickle
import sys
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxkd.errors import JaxkdError, describe

__all__ = [
    "TorchCheckpointError", "Unloaded", "RestrictedUnpickler", "restricted_pickle_module", "load_torch_file",
    "unwrap_state_dict", "state_dict_arrays", "unloaded_objects", "describe_state_dict",
]

_WRAPPER_KEYS = ("model_state_dict", "state_dict")


class TorchCheckpointError(JaxkdError, ValueError):
    """A PyTorch checkpoint that cannot be read or holds no usable state dict; the message names file and fix."""


# ----------------------------------------------------------------------------------------------------------------
# The restricted unpickler

class Unloaded:
    """Stands in for an object whose class or function is not on the allow-list; never runs any of its code.

    ``global_name`` is the pickled 'module.qualname'; ``args`` / ``kwargs`` what the pickle passed to it, ``state``
    what it set with BUILD, ``items`` what it appended or set by key. Calling an instance returns another
    placeholder (a pickle may call the result of a call).
    """

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = object.__new__(cls)
        object.__setattr__(obj, "args", args)
        object.__setattr__(obj, "kwargs", kwargs)
        object.__setattr__(obj, "state", None)
        object.__setattr__(obj, "items", [])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # the record is made in __new__
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "state", state)

    def __call__(self, *args: Any, **kwargs: Any) -> Unloaded:
        return _placeholder(f"{self.global_name}(...)")(*args, **kwargs)

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def add(self, item: Any) -> None:
        self.items.append(item)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"<unloaded {self.global_name}>"


_PLACEHOLDERS: dict[str, type] = {}


def _placeholder(global_name: str) -> type:
    """A placeholder class (subclass of :class:`Unloaded`) for the global 'module.name'; one per name."""
    cls = _PLACEHOLDERS.get(global_name)
    if cls is None:
        short = global_name.rsplit(".", 1)[-1] or "Unloaded"
        cls = type(short, (Unloaded,), {"global_name": global_name, "__module__": __name__,
                                        "__qualname__": f"Unloaded[{global_name}]"})
        _PLACEHOLDERS[global_name] = cls
    return cls


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes use it; any other codec is refused."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with codec {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[str, Any]:
    """'module.name' -> object for everything a pickle of tensors, numpy arrays and plain containers needs.

    Built from already-imported objects (torch only if it is imported), so looking a name up never imports.
    The tensor-rebuild functions only construct tensors from storages that torch's own reader supplies.
    """
    allowed: dict[str, Any] = {
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set, "builtins.frozenset": frozenset, "builtins.complex": complex,
        "builtins.bytearray": bytearray, "builtins.slice": slice, "builtins.range": range,
    }
    allowed["_codecs.encode"] = _encode_latin1  # protocol-2 pickles of bytes: encode(str, 'latin1')
    core = getattr(np, "_core", None) or np.core
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[f"{mod}._reconstruct"] = core.multiarray._reconstruct
        allowed[f"{mod}.scalar"] = core.multiarray.scalar
    allowed["numpy.ndarray"] = np.ndarray
    allowed["numpy.dtype"] = np.dtype
    for name in ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
                 "float32", "float64", "complex64", "complex128"):
        allowed[f"numpy.dtypes.{type(np.dtype(name)).__name__}"] = type(np.dtype(name))
    torch = sys.modules.get("torch")
    if torch is not None:
        u = torch._utils
        for fn in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                   "_rebuild_parameter_with_state", "_rebuild_device_tensor_from_cpu_tensor"):
            if hasattr(u, fn):
                allowed[f"torch._utils.{fn}"] = getattr(u, fn)
        allowed["torch._tensor._rebuild_from_type_v2"] = torch._tensor._rebuild_from_type_v2
        allowed["torch.nn.parameter.Parameter"] = torch.nn.Parameter
        allowed["torch.Tensor"] = torch.Tensor
        allowed["torch._tensor.Tensor"] = torch.Tensor
        allowed["torch.Size"] = torch.Size
        allowed["torch.device"] = torch.device
        for value in vars(torch).values():
            if isinstance(value, torch.dtype):
                allowed[str(value)] = value  # 'torch.float32', ...
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` returns allow-listed objects or :class:`Unloaded` placeholders.

    Every opcode that could run code (REDUCE, NEWOBJ, INST, OBJ, BUILD via ``__setstate__``, extension codes)
    reaches a callable only through ``find_class``, so only allow-listed functions and inert placeholders run.
    """

    def __init__(self, file, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 pickles use Python 2 names
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = f"{module}.{name}"
        obj = self._allowed.get(key)
        return obj if obj is not None else _placeholder(key)


def _restricted_load(file, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data: bytes, **kwargs: Any) -> Any:
    import io

    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


def restricted_pickle_module() -> types.ModuleType:
    """A module object usable as ``torch.load(..., pickle_module=...)``: Unpickler / load / loads restricted."""
    mod = types.ModuleType("jaxkd_restricted_pickle")
    mod.Unpickler = RestrictedUnpickler
    mod.load = _restricted_load
    mod.loads = _restricted_loads
    mod.UnpicklingError = pickle.UnpicklingError
    return mod


def load_torch_file(path: str | Path) -> Any:
    """The object stored in a ``.pth`` / ``.pt`` (torch zip format) or ``.safetensors`` file, read safely.

    ``.pth``: tensors come back as CPU torch tensors, containers as themselves, any other pickled object as an
    :class:`Unloaded` placeholder (see the module docstring). ``.safetensors``: a dict of numpy arrays.
    Raises :class:`TorchCheckpointError` for a missing file, the legacy (torch < 1.6) or TorchScript formats, a
    damaged file, or torch not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise TorchCheckpointError(f"{path}: no such file; give the original project's best_model.pth")
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise TorchCheckpointError(f"{path}: reading .safetensors needs the safetensors package "
                                       "(pip install safetensors)") from None
        try:
            return dict(load_file(str(path)))
        except Exception as e:  # safetensors raises its own SafetensorError
            raise TorchCheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    if not zipfile.is_zipfile(path):
        raise TorchCheckpointError(
            f"{path}: not a PyTorch zip checkpoint (torch.save's format since torch 1.6); re-save it with a recent "
            "torch (torch.save(torch.load(f), f2)) or export it as .safetensors")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in names):
        raise TorchCheckpointError(f"{path}: a TorchScript archive, not a state dict; save "
                                   "model.state_dict() with torch.save instead")
    try:
        import torch
    except ImportError:
        raise TorchCheckpointError(f"{path}: reading .pth files needs torch (pip install torch; the CPU build is "
                                   "enough), or give the weights as .safetensors") from None
    try:
        return torch.load(path, map_location="cpu", pickle_module=restricted_pickle_module(), weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise TorchCheckpointError(f"{path}: cannot read the checkpoint ({describe(e)})") from None


# ----------------------------------------------------------------------------------------------------------------
# What a loaded checkpoint holds

def unloaded_objects(obj: Any, prefix: str = "", limit: int = 20) -> list[str]:
    """'path: module.name' for each :class:`Unloaded` placeholder in ``obj`` (dicts, lists, tuples), outermost
    first, at most ``limit``."""
    out: list[str] = []

    def walk(x: Any, where: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(x, Unloaded):
            out.append(f"{where or '<top>'}: {x.global_name}")
        elif isinstance(x, Mapping):
            for k, v in x.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")

    walk(obj, prefix)
    return out


def as_array(value: Any) -> np.ndarray | None:
    """A torch tensor (bfloat16 kept as ml_dtypes.bfloat16), numpy array or number as a numpy array; None otherwise."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            import ml_dtypes

            return t.float().numpy().astype(ml_dtypes.bfloat16)
        return t.numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (np.generic, int, float)) and not isinstance(value, bool):
        return np.asarray(value)
    return None


def unwrap_state_dict(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the inner dict of a checkpoint wrapper ``{'model_state_dict': sd, ...}`` (or ``'state_dict'``)."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a mapping of parameter names to arrays, got {type(state_dict).__name__}")
    for k in _WRAPPER_KEYS:
        inner = state_dict.get(k)
        if isinstance(inner, Mapping):
            return inner
    return state_dict


def state_dict_arrays(obj: Any, where: str = "checkpoint") -> dict[str, np.ndarray]:
    """The model state dict inside a loaded checkpoint, as {key: numpy array} (torch layout, dtypes kept).

    Accepts a state dict or a dict holding one under 'model_state_dict' (or 'state_dict'). Raises
    :class:`TorchCheckpointError` naming the first entry that is not a tensor or array.
    """
    if isinstance(obj, Unloaded):
        raise TorchCheckpointError(f"{where}: holds a pickled {obj.global_name} object, not a state dict; save "
                                   "model.state_dict() (or {'model_state_dict': model.state_dict()}) instead")
    if not isinstance(obj, Mapping):
        raise TorchCheckpointError(f"{where}: holds a {type(obj).__name__}, not a state dict")
    sd = unwrap_state_dict(obj)
    out: dict[str, np.ndarray] = {}
    for key, value in sd.items():
        arr = as_array(value)
        if not isinstance(key, str) or arr is None:
            what = value.global_name if isinstance(value, Unloaded) else type(value).__name__
            keys = ", ".join(map(repr, list(obj)[:8]))
            raise TorchCheckpointError(
                f"{where}: entry {key!r} is a {what}, not a tensor; expected a state dict or a dict holding one "
                f"under 'model_state_dict' (top-level keys: {keys})")
        out[key] = arr
    if not out:
        raise TorchCheckpointError(f"{where}: the state dict is empty")
    return out


def _count(prefix: str, keys) -> int:
    idx = {k[len(prefix):].split(".", 1)[0] for k in keys if k.startswith(prefix)}
    return len([i for i in idx if i.isdigit()])


def describe_state_dict(sd: Mapping[str, Any]) -> str:
    """A short guess of the architecture a torch-layout state dict (values: arrays or shape tuples) was saved
    from, e.g. 'adaptive_cnn (mnist variant, 1 input channel, 10 classes)' or 'deit (depth 12, embed_dim 192,
    patch 4, mlp_ratio 2.0, 66 positions, conv stem, dist token, 10 classes)', 'resnet18_cifar (3 input channels, 10
    classes)', 'convnextv2 (depths (3, 3, 9, 3), width 96, 2x2 stem, ...)'; '' when the keys are not those of a
    jaxkd / original-project model."""
    shape = {k: tuple(v) if isinstance(v, tuple) else tuple(np.shape(v)) for k, v in sd.items()}
    if "features.0.0.weight" in shape and "classifier.3.weight" in shape:
        c0, cin = shape["features.0.0.weight"][:2]
        variant = {32: "mnist", 64: "cifar"}.get(c0, f"stem width {c0}")
        se = "" if any(".se." in k for k in shape) else ", no SE"
        return (f"adaptive_cnn ({variant} variant, {cin} input channel{'s' * (cin != 1)}, "
                f"{shape['classifier.3.weight'][0]} classes{se})")
    if "cls_token" in shape and "head.weight" in shape:
        d = shape["cls_token"][-1]
        parts = [f"depth {_count('blocks.', shape)}", f"embed_dim {d}"]
        proj = shape.get("patch_embed.proj.weight")
        if proj:
            parts.append(f"patch {proj[-1]}")
        fc1 = shape.get("blocks.0.mlp.fc1.weight")
        if fc1:
            parts.append(f"mlp_ratio {fc1[0] / d:g}")
        if "pos_embed" in shape:
            parts.append(f"{shape['pos_embed'][1]} positions")
        parts.append("conv stem" if "patch_embed.stem.0.weight" in shape else "no conv stem")
        parts.append("dist token" if "dist_token" in shape else "no dist token")
        if "channel_expand.weight" in shape:
            parts.append("grayscale adapter")
        parts.append(f"{shape['head.weight'][0]} classes")
        return f"deit ({', '.join(parts)})"
    if "conv1.weight" in shape and "layer1.0.conv1.weight" in shape and "fc.weight" in shape:
        stem = shape["conv1.weight"]
        blocks = sum(1 for k in shape if k.startswith("layer") and k.endswith(".conv1.weight"))
        bottleneck = "layer1.0.conv3.weight" in shape
        tail = f"{stem[1]} input channels, {shape['fc.weight'][0]} classes"
        if stem[2:] == (3, 3) and blocks == 8 and not bottleneck:
            return f"resnet18_cifar ({tail})"
        return (f"a ResNet other than resnet18_cifar ({stem[2]}x{stem[3]} stem, {blocks} "
                f"{'bottleneck ' if bottleneck else ''}block{'s' * (blocks != 1)}, {tail})")
    dw = "stages.0.blocks.0.conv_dw.weight"
    for prefix in ("", "model."):
        if prefix + dw in shape and prefix + "stem.0.weight" in shape:
            stem, width = shape[prefix + "stem.0.weight"], shape[prefix + dw][0]
            v2 = prefix + "stages.0.blocks.0.mlp.grn.weight" in shape
            depths = [_count(f"{prefix}stages.{i}.blocks.", shape) for i in range(4)]
            head = shape.get(prefix + "head.fc.weight", (0,))[0]
            return (f"convnext{'v2' if v2 else ' (V1, no GRN)'} (depths {tuple(depths)}, width {width}, "
                    f"{stem[2]}x{stem[3]} stem, {stem[1]} input channels, {head} classes"
                    f"{', the original project wrapper layout' if prefix else ''})")
    return ""
