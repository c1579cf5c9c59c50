"""What training a student (:mod:`.loop`) and a teacher (:mod:`.teacher`) share: the error for
bad settings and unusable files, the augmentation, the torch settings of a deterministic run,
and checkpoint files of plain tensors and data (written and read safely)."""

import io
import math
import pickle
import pickletools
import re
import warnings
import zipfile
from collections import OrderedDict

import numpy as np
import torch

from ..errors import SbnnError

__all__ = ["TrainError", "augment", "cosine_rate"]


class TrainError(SbnnError):
    """Bad training settings or a checkpoint that cannot be used."""


def augment(x, rng, *, shift=0, flip=False):
    """Images ``x`` (``[N, H, W, C]``) each moved by a random whole number of pixels in
    ``[-shift, shift]`` along both axes (the pixels moved in are 0, as the background is) and,
    with ``flip``, mirrored left to right with probability 1/2. Draws from ``rng`` only what is
    enabled, so that a run without augmentation draws exactly as before."""
    if shift:
        n, h, w = x.shape[:3]
        padded = np.pad(x, [(0, 0), (shift, shift), (shift, shift)] + [(0, 0)] * (x.ndim - 3))
        dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
        rows = (dy[:, None] + np.arange(h))[:, :, None]
        cols = (dx[:, None] + np.arange(w))[:, None, :]
        x = padded[np.arange(n)[:, None, None], rows, cols]
    if flip:
        mirrored = rng.random(len(x)) < 0.5
        x = np.where(mirrored.reshape(-1, *[1] * (x.ndim - 1)), x[:, :, ::-1], x)
    return x


def cosine_rate(lr, step, total_steps):
    """The learning rate at ``step`` of ``total_steps``: ``lr`` on a cosine schedule to 0."""
    return lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))


def _setup(config):
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    # Filling every fresh tensor with NaN (the deterministic mode's default) costs a third of a
    # step and changes no result: every tensor here is written before it is read.
    torch.utils.deterministic.fill_uninitialized_memory = False


_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _plain(value, where="checkpoint"):
    """``value`` with NumPy scalars turned into Python numbers; a TypeError (a bug, not bad
    input) for anything else that is not plain data or a tensor."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, OrderedDict):  # a module's state dict: tensors, as torch writes them
        return value
    if isinstance(value, dict):
        return {_plain(k, where): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item, f"{where}[{i}]") for i, item in enumerate(value))
    raise TypeError(f"{where}: a checkpoint holds tensors and plain data only, found {type(value).__name__}")


def _checkpoint_bytes(state):
    """A checkpoint: ``state``, a dict of tensors and plain data only, so that it loads with
    ``torch.load(weights_only=True)``, which rebuilds those and refuses every other object (see
    docs/training.md). ``config``: the :class:`Config` as a dict of plain values; ``epoch``: the
    last epoch done (from 0); ``model`` and ``optimizer``: the state dicts (a slim checkpoint has no
    ``optimizer``); ``log``: the JSON log so far, a list of dicts; ``controller``: the sparsity
    controller's state (plain floats; None for a dense BNN; absent before the controller existed).
    No random generator state: epoch ``e`` draws from ``numpy.random.default_rng([seed, e])``,
    rebuilt on resume. A teacher's file (:func:`~sbnn_hdl.train.teacher.save_teacher`) is written
    the same way, with keys of its own."""
    buffer = io.BytesIO()
    torch.save(_plain(state), buffer)
    return buffer.getvalue()


#: The globals that torch.save writes for tensors and plain data, which weights_only accepts.
_TENSOR_GLOBALS = re.compile(r"collections\.OrderedDict|torch\._utils\._rebuild_\w+|torch\.\w*Storage")


def _pickled_imports(path):
    """The ``module.name`` globals that the pickles of file ``path`` (a torch.save zip file: its
    ``data.pkl``) import, read with :mod:`pickletools`, which parses and runs nothing; None when
    the file holds no pickle at all."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(member) if member else b""
        else:
            with open(path, "rb") as file:
                data = file.read()
    except (OSError, zipfile.BadZipFile):
        return None
    stream, imports, parsed = io.BytesIO(data), [], False
    while stream.tell() < len(data):  # a legacy torch.save file is several pickles, then raw data
        recent, memo = [None, None], {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    module, name = arg.split(" ", 1)
                elif op.name == "STACK_GLOBAL":
                    module, name = recent[-2], recent[-1]
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = recent[-1]
                    continue
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = recent[-1]
                    continue
                else:
                    recent.append(memo.get(arg) if op.name in ("GET", "BINGET", "LONG_BINGET")
                                  else arg if isinstance(arg, str) else None)
                    continue
                module = {"__builtin__": "builtins"}.get(module, module)  # protocol 2 names
                imports.append(f"{module}.{name}")
                recent.append(None)
        except Exception:  # not (or no more) pickle data
            break
        parsed = True
    return imports if parsed else None


def _load_checkpoint(path):
    """The state dict of checkpoint ``path``, loaded with ``weights_only=True``: tensors and plain
    data only. A pickle of other objects is refused (unpickling it could run any code)."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it was not written with
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"checkpoint {path!r}: expected a checkpoint file, found no such file") from None
    except pickle.UnpicklingError as error:  # weights_only refuses what it would not rebuild, and garbage
        imports = _pickled_imports(path)
        if imports is None:
            raise TrainError(f"checkpoint {path!r}: expected a checkpoint written by sbnn_hdl.train, "
                             f"found unreadable data ({type(error).__name__})") from None
        others = list(dict.fromkeys(n for n in imports if not _TENSOR_GLOBALS.fullmatch(n)))
        found = (f"a pickle that imports {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}" if others
                 else "a pickle of objects other than tensors and plain data")
        raise TrainError(f"checkpoint {path!r}: expected a checkpoint of plain tensors and data written by "
                         f"sbnn_hdl.train, found {found} (refused: loading it could run code)") from None
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise TrainError(f"checkpoint {path!r}: expected a checkpoint written by sbnn_hdl.train, "
                         f"found unreadable data ({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise TrainError(f"checkpoint {path!r}: expected a checkpoint written by sbnn_hdl.train (a dict), "
                         f"found a {type(state).__name__}")
    return state


def _unusable(path, error):
    """The error for a checkpoint that loaded but is not one that sbnn_hdl.train wrote."""
    return TrainError(f"checkpoint {path!r}: expected a checkpoint written by sbnn_hdl.train, "
                      f"found {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
