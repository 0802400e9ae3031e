"""`parallax-probe trace MODEL --prompt TEXT | --tokens FILE [--out TRACE.h5]`: one prompt, every token.

    trace = trace_model(model, token_ids, maps="auto")     # a Trace of float64 arrays
    write_trace("trace.h5", trace, tokens, meta={...})    # one run-store segment file

The file is a run-store segment (docs/file-format.md, "Token traces"): `open_run("trace.h5")`
reads it. Its tables index rows by token position instead of training step:

- `tokens` (row i = token i): `token_id`, and per (layer, head) `cor`, `osm_norm`, `c_norm`,
  `r_norm`, `tbar`, `negative_mass`, `sink_p`, `sink_w`;
- `heads` (one row, step 0): per (layer, head) `negative_fraction`, and the means over queries
  1..T-1 of `cor`, `negative_mass`, `sink_p`, `sink_w` (query 0 can only attend to token 0);
- `maps` (row i = query i): `p` and `w`, (M, T) for the M (layer, head) pairs in the root
  attribute `maps`. Only the pairs asked for are stored (`--maps`); the file is gzip-compressed,
  which the zeros above the diagonal cost almost nothing in.

How tokens are shown is stored with them (`token_text`, `token_display`): a byte-level model
(ours, trained on `text:`) shows characters, a model folder with a `tokenizer.json` its BPE
tokens, anything else the ids.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .run_folder import CHECKPOINT_NAME, run_info_of

TRACE_KIND = "token-trace"
MAX_TOKENS = 8192
# --maps auto stores every (layer, head) map while they hold at most this many weights per
# kind (p or w; 128 MiB in float32 before compression), else head 0 of each layer if that fits.
AUTO_MAP_WEIGHTS = 2**25
COMMIT_ROWS = 256
PER_TOKEN = ("cor", "osm_norm", "c_norm", "r_norm", "tbar", "negative_mass", "sink_p", "sink_w")
PER_TOKEN_DOC = {
    "cor": "||c_i|| / ||o_sm_i||",
    "osm_norm": "||o_sm_i||",
    "c_norm": "||c_i||",
    "r_norm": "||r_i|| as the attention op received r",
    "tbar": "tbar_i = sum_j p_ij s2_ij",
    "negative_mass": "sum_j max(-w_ij, 0): the negative effective weight of query i",
    "sink_p": "p_i0: softmax weight on the first token",
    "sink_w": "w_i0: effective weight on the first token",
}
HEAD_SUMMARY = ("negative_fraction", "cor_mean", "negative_mass_mean", "sink_p_mean", "sink_w_mean")


class TraceInputError(ValueError):
    """Input that cannot be traced; the message names it and the fix."""


@dataclass(frozen=True, slots=True)
class Tokens:
    """The prompt: ids (T,) int64, and how each token reads (`display`: bytes, tokenizer.json or ids)."""

    ids: np.ndarray
    text: list[str]
    display: str


@dataclass(frozen=True, slots=True)
class Trace:
    """L layers, H heads, T tokens. per_token[name]: (L, H, T); negative_fraction: (L, H);
    maps: the (layer, head) pairs of p and w, each (M, T, T)."""

    layer_modules: list[str]
    per_token: dict[str, np.ndarray]
    negative_fraction: np.ndarray
    maps: list[tuple[int, int]]
    p: np.ndarray
    w: np.ndarray
    scale: list[float | None]
    window: list[int | None]

    def head_summary(self) -> dict[str, np.ndarray]:
        """(L, H) per name of HEAD_SUMMARY; means over queries 1..T-1 (all queries when T = 1)."""
        first = 1 if self.per_token["cor"].shape[-1] > 1 else 0
        out = {"negative_fraction": self.negative_fraction}
        for name in ("cor", "negative_mass", "sink_p", "sink_w"):
            out[f"{name}_mean"] = self.per_token[name][..., first:].mean(-1)
        return out


# ---- tokens -------------------------------------------------------------------------------

def read_tokens_file(path: str | Path) -> np.ndarray:
    """Token ids from `path`: a `.npy` array of integers (any shape, read flat; never a pickle),
    or text holding integers separated by whitespace (one per line, or several per line)."""
    path = Path(path)
    if not path.is_file():
        raise TraceInputError(f"--tokens {path}: not a file; pass a .npy array of ids or a text file of ids")
    if path.suffix == ".npy":
        try:
            ids = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise TraceInputError(f"--tokens {path}: not a readable .npy array of ids ({error})") from None
        if ids.dtype.kind not in "iu":
            raise TraceInputError(f"--tokens {path}: holds {ids.dtype} values; token ids are integers")
        ids = ids.reshape(-1).astype(np.int64)
    else:
        try:
            words = path.read_text().split()
        except (UnicodeDecodeError, OSError) as error:
            raise TraceInputError(f"--tokens {path}: not a text file of ids ({error}); use one integer per line, or a .npy") from None
        try:
            ids = np.array([int(word) for word in words], dtype=np.int64)
        except ValueError as error:
            raise TraceInputError(f"--tokens {path}: {error}; the file must hold integer token ids separated by whitespace") from None
    if ids.size == 0:
        raise TraceInputError(f"--tokens {path}: holds no token ids")
    return ids


def byte_text(token: int) -> str:
    """A byte token as it reads: printable ASCII as itself, anything else escaped (\\n, \\xe2)."""
    char = chr(token)
    if char.isprintable() and token < 128:
        return char
    return repr(char)[1:-1] if token < 128 else f"\\x{token:02x}"


class TokenText:
    """How a model's tokens are made from text and shown. kind: bytes, tokenizer.json or ids."""

    def __init__(self, kind: str, tokenizer: Any = None) -> None:
        self.kind, self._tokenizer = kind, tokenizer

    @classmethod
    def for_model(cls, path: str | Path) -> TokenText:
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        if (folder / "tokenizer.json").is_file() and (folder / "config.json").is_file():
            from tokenizers import Tokenizer  # a JSON description: loading it runs no code from the folder

            try:
                return cls("tokenizer.json", Tokenizer.from_file(str(folder / "tokenizer.json")))
            except Exception as error:
                raise TraceInputError(f"{folder / 'tokenizer.json'}: not a tokenizer the tokenizers library reads ({error})") from None
        run_info = run_info_of(folder / CHECKPOINT_NAME)
        if run_info:
            try:
                task = json.loads(run_info.read_text()).get("task", {})
            except (json.JSONDecodeError, AttributeError):
                task = {}
            if isinstance(task, dict) and str(task.get("name", "")).startswith("text:"):
                return cls("bytes")
        return cls("ids")

    def encode(self, text: str) -> np.ndarray:
        if self.kind == "bytes":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        if self.kind == "tokenizer.json":
            return np.array(self._tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        raise TraceInputError("--prompt needs a tokenizer, and this model has none (not byte-level, no tokenizer.json "
                              "beside it); pass the token ids with --tokens FILE")

    def show(self, ids: np.ndarray) -> list[str]:
        if self.kind == "bytes":
            return [byte_text(int(t)) for t in ids]
        if self.kind == "tokenizer.json":
            return [self._tokenizer.id_to_token(int(t)) or str(int(t)) for t in ids]
        return [str(int(t)) for t in ids]


def check_ids(ids: np.ndarray, vocab_size: int) -> None:
    if ids.size > MAX_TOKENS:
        raise TraceInputError(f"{ids.size} tokens: a trace takes at most {MAX_TOKENS} (its T x T maps grow with the square); "
                              "trace a shorter prompt")
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.size:
        raise TraceInputError(f"token id {int(bad[0])} is outside the model's vocabulary (0 to {vocab_size - 1})")


# ---- which maps ---------------------------------------------------------------------------

def map_items(spec: str) -> list[tuple[int, int | None]]:
    """The LAYER:HEAD and LAYER items of a --maps list (head None: every head of the layer)."""
    items = []
    for part in spec.split(","):
        layer_text, colon, head_text = part.strip().partition(":")
        try:
            items.append((int(layer_text), int(head_text) if colon else None))
        except ValueError:
            raise TraceInputError(f"--maps {spec!r}: expected auto, all, none, or LAYER:HEAD / LAYER items separated by commas") from None
    return items


def parse_maps(spec: str, layers: int, heads: int, tokens: int) -> list[tuple[int, int]]:
    """`auto`, `all`, `none`, or a comma list of LAYER:HEAD and LAYER (every head of that layer)."""
    every = [(layer, head) for layer in range(layers) for head in range(heads)]
    if spec == "all":
        return every
    if spec == "none":
        return []
    if spec == "auto":
        if len(every) * tokens**2 <= AUTO_MAP_WEIGHTS:
            return every
        return [(layer, 0) for layer in range(layers)] if layers * tokens**2 <= AUTO_MAP_WEIGHTS else []
    pairs: set[tuple[int, int]] = set()
    for layer, head in map_items(spec):
        if not 0 <= layer < layers or not (head is None or 0 <= head < heads):
            raise TraceInputError(f"--maps {spec!r}: the model has layers 0 to {layers - 1} and heads 0 to {heads - 1}")
        pairs.update((layer, h) for h in (range(heads) if head is None else [head]))
    return sorted(pairs)


# ---- tracing ------------------------------------------------------------------------------

def trace_model(model, token_ids, maps: str | list[tuple[int, int]] = "auto") -> Trace:
    """Trace `model` (parallax-probe's, or an fla / parallax-kernel model) on one sequence of ids."""
    import torch

    from .hooks.trace import capture_attention_calls, trace_layer

    device = next(model.parameters()).device
    ids = torch.as_tensor(np.asarray(token_ids), dtype=torch.long, device=device).reshape(1, -1)
    calls = capture_attention_calls(model, ids)
    heads = calls[0][1].q.shape[2]
    T = ids.shape[1]
    pairs = parse_maps(maps, len(calls), heads, T) if isinstance(maps, str) else sorted(maps)
    layers = []
    for index, (_, call) in enumerate(calls):
        layers.append(trace_layer(call, map_heads=[h for layer, h in pairs if layer == index]))
    return Trace(
        layer_modules=[name for name, _ in calls],
        per_token={name: np.stack([getattr(layer, name) for layer in layers]) for name in PER_TOKEN},
        negative_fraction=np.stack([layer.negative_fraction for layer in layers]),
        maps=pairs,
        p=np.concatenate([layer.p for layer in layers]),
        w=np.concatenate([layer.w for layer in layers]),
        scale=[call.scale for _, call in calls],
        window=[call.window for _, call in calls],
    )


# ---- the file -----------------------------------------------------------------------------

def trace_tables(layers: int, heads: int, tokens: int, maps: int) -> dict:
    from .store import Column

    LH, dims = (layers, heads), ("layer", "head")
    tables = {
        "tokens": {"token_id": Column("token_id", (), (), "i8", doc="the token's id"),
                   **{n: Column(n, LH, dims, "f4", doc=PER_TOKEN_DOC[n]) for n in PER_TOKEN}},
        "heads": {n: Column(n, LH, dims, "f4", doc=("share of attended (i, j) pairs with w_ij < 0" if n == "negative_fraction"
                                                    else f"mean over queries 1..T-1 of {n[:-5]}")) for n in HEAD_SUMMARY},
    }
    if maps:
        tables["maps"] = {
            "p": Column("p", (maps, tokens), ("map", "key"), "f4", doc="softmax weights p_ij of query i (the row), per stored map"),
            "w": Column("w", (maps, tokens), ("map", "key"), "f4", doc="effective weights w_ij = p_ij (1 + tbar_i - s2_ij)"),
        }
    return tables


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that cannot be written, before anything is computed."""
    if out.exists() and (out.is_dir() or not overwrite):
        raise TraceInputError(f"--out {out} exists; pass --overwrite to replace it, or choose another --out"
                              if not out.is_dir() else f"--out {out} is a folder; name a file, e.g. {out / 'trace.h5'}")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise TraceInputError(f"--out {out}: the folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise TraceInputError(f"--out {out}: cannot write in {parent}; choose another --out")


def write_trace(out: str | Path, trace: Trace, tokens: Tokens, meta: dict[str, Any] | None = None) -> Path:
    """Write the trace as one closed, compressed segment file at `out` (replacing a file there)."""
    from .store import RunWriter

    out = Path(out)
    L, H, T = trace.per_token["cor"].shape
    staging = out.with_name(f".{out.name}.writing")
    shutil.rmtree(staging, ignore_errors=True)
    info = {
        "kind": TRACE_KIND, "layers": L, "heads": H, "tokens": T, "maps": [list(pair) for pair in trace.maps],
        "token_text": tokens.text, "token_display": tokens.display, "layer_modules": trace.layer_modules,
        "scale": trace.scale, "window": trace.window, **(meta or {}),
    }
    try:
        writer = RunWriter(staging, tables=trace_tables(L, H, T, len(trace.maps)), meta=info, start_step=0, fsync_every_s=None)
        try:
            per_token = {name: values.transpose(2, 0, 1).astype(np.float32) for name, values in trace.per_token.items()}  # (T, L, H)
            for i in range(T):
                writer.append("tokens", i, token_id=int(tokens.ids[i]), **{name: values[i] for name, values in per_token.items()})
                if trace.maps:
                    writer.append("maps", i, p=trace.p[:, i], w=trace.w[:, i])
                if (i + 1) % COMMIT_ROWS == 0:
                    writer.commit()  # bounds the rows held in memory: M maps x T keys each
            writer.append("heads", 0, **{name: values.astype(np.float32) for name, values in trace.head_summary().items()})
        finally:
            writer.close()  # commits, closes, rewrites the file compressed
        (segment,) = staging.glob("segment-*.h5")
        os.replace(segment, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def run_trace(model_path: str, *, prompt: str | None, tokens_file: str | None, out: str, maps: str = "auto",
              overwrite: bool = False, device: str = "cpu") -> tuple[Path, Trace, Tokens]:
    """What `parallax-probe trace` does: every check first, then load, trace, write."""
    import torch

    from .load import load_model
    from .provenance import code_version, device_description, package_versions
    from .train import pick_device

    out_path = Path(out)
    check_out(out_path, overwrite)
    try:
        pick_device(device)
    except ValueError as error:
        raise TraceInputError(str(error)) from None
    if maps not in ("auto", "all", "none"):
        map_items(maps)  # the syntax now; the ranges once the model is known
    ids = read_tokens_file(tokens_file) if tokens_file is not None else None
    model = load_model(model_path, device=device)
    text = TokenText.for_model(model_path)
    if ids is None:
        ids = text.encode(prompt)
        if ids.size == 0:
            raise TraceInputError("--prompt is empty; give it some text")
    vocab_size = model.config.vocab_size
    check_ids(ids, vocab_size)
    tokens = Tokens(ids=ids, text=text.show(ids), display=text.kind)
    with torch.no_grad():
        trace = trace_model(model, ids, maps=maps)
    meta = {"model": str(model_path), "model_class": type(model).__name__, "code_version": code_version(),
            "package_versions": package_versions(), "device": device_description(device)}
    return write_trace(out_path, trace, tokens, meta), trace, tokens
