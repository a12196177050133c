#!/usr/bin/python3
"""Generate a deterministic family of small GPT-style language models for lineagefs.

Usage: make_family.py OUT_DIR [--small] [--params N] [--seed S] [--steps K] [--corpus DIR]...

Every model version is a directory OUT_DIR/<model>/<version>/ holding one checkpoint
(model.safetensors or model.pt), config.json and, for some, a README.md with Hugging
Face model-card front matter.  OUT_DIR/manifest.json lists the versions in a valid import
order (parents before children).  A summary table goes to stderr.

The family (parents in brackets):
  base/v1..v3    pre-training checkpoints every K steps of one run      safetensors
  bf16/v1        [base/v3 quantize]  cast of every tensor to bfloat16     safetensors
  int8/v1        [base/v3 quantize]  per-output-channel symmetric int8 for the decoder
                 Linear weights + fp32 `<name>.scale`; embeddings, lm_head, biases and
                 norms stay fp32                                          model.pt
  pruned/v1      [base/v3 prune]     per 2-D tensor, the 50% smallest |w| set to +0.0
                                                                          model.pt
  ft-a,b,c/v1..v3 [base/v3 finetune] full fine-tunes on disjoint text subsets,
                 a checkpoint every K steps of one run                    safetensors
  partial-a,b/v1 [base/v3 finetune]  embeddings + lower half of the layers frozen
                 (requires_grad False): those tensors are bit-identical  model.pt
  lora/v1        [base/v3 adapter]   rank-4 LoRA on q_proj/v_proj (alpha 8), merged
                 W + (B@A)*alpha/r; every other tensor is bit-identical  model.pt
  vocab-ext/v1   [base/v3 finetune]  64 new tokens (the subset's most frequent byte
                 pairs) appended to embed_tokens and lm_head, new rows initialised
                 to the mean of their two bytes' rows, then only the new rows trained
                 (gradient hook zeroes old rows' grads, no weight decay): old rows and
                 every other tensor are bit-identical to base/v3         safetensors
  merge/v1       [ft-a/v3 merge, ft-b/v3 merge]  0.5/0.5 linear average   safetensors

Text: byte-level tokens (0..255) + 4 specials, from *.txt, copyright and README* files
under /usr/share/common-licenses and /usr/share/doc (sorted, de-duplicated by content,
.gz READMEs decompressed, each file capped at 64 KiB), split into disjoint subsets by a
hash of each file's path. Training: AdamW on fp32 master weights with bf16 autocast
(Debian's torch does fp32 matmuls with the reference BLAS, ~50x slower than oneDNN bf16);
every checkpoint is stored fp32 unless the variant says otherwise.

manifest.json = {"versions": [{model, version, path, parents: [{model, version, relation}],
relation (= the first parent's, null for roots and pure successors), message,
predecessor: "<model>/<version>" | null}], "generator": {args, corpus fingerprint}}.

Deterministic: the same arguments and the same corpus files give byte-identical output
on the same machine (fixed seeds, 2 threads, deterministic algorithms). The corpus is
whatever docs the installed packages ship, so installing packages changes the output;
the manifest's generator.corpus_sha256 tells. Use --corpus DIR to pin a copy.
"""

import argparse
import gzip
import hashlib
import json
import math
import os
import shutil
import sys
import time
import zlib
from collections import OrderedDict

# Idle OpenMP workers sleep instead of spinning: on a shared, busy machine spinning
# doubles both the wall time and the CPU taken from others. No effect on the numbers.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------- tokens
N_BYTES = 256
SPECIALS = ["<|endoftext|>", "<|pad|>", "<|bos|>", "<|unk|>"]
EOT = 256
BASE_VOCAB = N_BYTES + len(SPECIALS)  # 260
N_NEW_TOKENS = 64

CORPUS_ROOTS = ["/usr/share/common-licenses", "/usr/share/doc"]
MAX_FILE_BYTES = 64 * 1024
MAX_SUBSET_BYTES = 8 * 1024 * 1024


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- corpus
def _wanted(name):
    return name.endswith(".txt") or name == "copyright" or name.startswith("README")


def collect_corpus(roots):
    """Returns ({category: [(path, bytes), ...]}, fingerprint): sorted by path, de-duplicated
    by content (the first path in sorted order wins). Files under a `common-licenses` root
    are all taken; elsewhere *.txt, copyright and README* (README*.gz decompressed)."""
    paths = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                if "common-licenses" in root or _wanted(fn):
                    paths.append(os.path.join(dirpath, fn))
    paths.sort()
    seen = set()
    fp = hashlib.sha256()
    cats = {"licenses": [], "copyright": [], "readme": []}
    for p in paths:
        try:
            if not os.path.isfile(p) or p.endswith((".bz2", ".xz", ".zst", ".lz4")):
                continue
            with open(p, "rb") as f:
                data = f.read()
            if p.endswith(".gz"):
                data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile):
            continue
        data = data[:MAX_FILE_BYTES]
        if len(data) < 64:
            continue
        h = hashlib.sha256(data).digest()
        if h in seen:
            continue
        seen.add(h)
        fp.update(p.encode() + b"\0" + h)
        if "/common-licenses/" in p:
            cats["licenses"].append((p, data))
        elif os.path.basename(p) == "copyright":
            cats["copyright"].append((p, data))
        else:
            cats["readme"].append((p, data))
    return cats, fp.hexdigest()


def split_corpus(cats):
    """Disjoint subsets, chosen per file by a hash of its path (so installing or removing
    a package only moves that package's files): half of the copyright and README/txt files
    go to pre-training, the rest to the fine-tunes, one domain each; ft-a gets the licenses."""
    subsets = {k: [] for k in ["pretrain", "ft-a", "ft-b", "ft-c", "partial-a", "partial-b",
                               "lora", "vocab-ext"]}
    subsets["ft-a"] = [d for _, d in cats["licenses"]]
    for cat, names in (("copyright", ["ft-b", "partial-a", "lora"]),
                       ("readme", ["ft-c", "partial-b", "vocab-ext"])):
        for p, d in cats[cat]:
            h = zlib.crc32(p.encode()) % 6
            subsets["pretrain" if h < 3 else names[h - 3]].append(d)
    return subsets


def docs_to_array(docs):
    """Concatenate documents as uint8 arrays with their boundaries (EOT goes in between)."""
    out, total = [], 0
    for d in docs:
        if total >= MAX_SUBSET_BYTES:
            break
        d = d[: MAX_SUBSET_BYTES - total]
        out.append(np.frombuffer(d, dtype=np.uint8))
        total += len(d)
    return out


def tokens_plain(arrays):
    parts = []
    for a in arrays:
        parts.append(a.astype(np.int64))
        parts.append(np.array([EOT], dtype=np.int64))
    return torch.from_numpy(np.concatenate(parts))


def top_byte_pairs(arrays, n):
    counts = np.zeros(65536, dtype=np.int64)
    for a in arrays:
        if len(a) > 1:
            pairs = a[:-1].astype(np.int64) * 256 + a[1:].astype(np.int64)
            counts += np.bincount(pairs, minlength=65536)
    order = np.lexsort((np.arange(65536), -counts))  # count desc, then pair id asc
    return [int(p) for p in order[:n]]


def tokens_with_merges(arrays, merges):
    """Greedy left-to-right merge of the given byte pairs into ids BASE_VOCAB + k."""
    lut = np.full(65536, -1, dtype=np.int64)
    for k, p in enumerate(merges):
        lut[p] = BASE_VOCAB + k
    parts = []
    for a in arrays:
        a = a.astype(np.int64)
        if len(a) < 2:
            parts += [a, np.array([EOT], dtype=np.int64)]
            continue
        pid = lut[a[:-1] * 256 + a[1:]]
        m = pid >= 0
        # position within each run of consecutive mergeable positions; greedy takes even ones
        idx = np.arange(len(m))
        run_start = np.where(m & ~np.concatenate([[False], m[:-1]]), idx, 0)
        run_start = np.maximum.accumulate(run_start)
        taken = m & ((idx - run_start) % 2 == 0)
        keep = np.ones(len(a), dtype=bool)
        keep[1:][taken] = False  # the second byte of a merged pair disappears
        toks = a.copy()
        toks[:-1][taken] = pid[taken]
        parts += [toks[keep], np.array([EOT], dtype=np.int64)]
    return torch.from_numpy(np.concatenate(parts))


# ----------------------------------------------------------------------------- model
class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        self.n_head = cfg["num_attention_heads"]
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.o_proj = nn.Linear(d, d)

    def forward(self, x):
        B, T, C = x.shape
        H = self.n_head
        q = self.q_proj(x).view(B, T, H, C // H).transpose(1, 2)
        k = self.k_proj(x).view(B, T, H, C // H).transpose(1, 2)
        v = self.v_proj(x).view(B, T, H, C // H).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.up_proj = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.down_proj = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"])

    def forward(self, x):
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        eps = cfg["layer_norm_eps"]
        self.input_layernorm = nn.LayerNorm(cfg["hidden_size"], eps=eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = nn.LayerNorm(cfg["hidden_size"], eps=eps)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], d)
        self.embed_positions = nn.Embedding(cfg["max_position_embeddings"], d)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.norm = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])

    def forward(self, idx):
        pos = torch.arange(idx.shape[1])
        x = self.embed_tokens(idx) + self.embed_positions(pos)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class TinyGPTForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)

    def init_weights(self):
        std = self.cfg["initializer_range"]
        resid_std = std / math.sqrt(2 * self.cfg["num_hidden_layers"])
        for name, p in self.named_parameters():
            if p.dim() == 1:
                if name.endswith("layernorm.weight") or name == "model.norm.weight":
                    nn.init.ones_(p)
                else:
                    nn.init.zeros_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, resid_std)
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        return self.lm_head(self.model(idx))


def make_config(params, small):
    if small:
        d, L, ctx = 128, 4, 64
    else:
        # head_dim 64, depth ~ d/64 (d=512, L=8 for 25M), then fit L to the count
        d = max(64, int(round((params * 64 / 12) ** (1 / 3) / 64)) * 64)
        per_layer = 12 * d * d + 13 * d
        ctx = 256 if d >= 256 else 128
        emb = (2 * BASE_VOCAB + ctx + 2) * d
        L = max(2, int(round((params - emb) / per_layer)))
    return OrderedDict(
        architectures=["TinyGPTForCausalLM"],
        model_type="tinygpt",
        vocab_size=BASE_VOCAB,
        hidden_size=d,
        intermediate_size=4 * d,
        num_hidden_layers=L,
        num_attention_heads=max(1, d // 64) if not small else 4,
        max_position_embeddings=ctx,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=False,
        bos_token_id=SPECIALS.index("<|bos|>") + N_BYTES,
        eos_token_id=EOT,
        pad_token_id=SPECIALS.index("<|pad|>") + N_BYTES,
        tokenizer="bytes: ids 0..255 are raw bytes; 256.. are %s" % ", ".join(SPECIALS),
        torch_dtype="float32",
    )


def n_params(sd):
    return sum(t.numel() for t in sd.values())


# ----------------------------------------------------------------------------- training
def stage_seed(seed, name):
    return (seed * 1000003 + zlib.crc32(name.encode())) % (2**62)


def param_groups(named, wd, no_wd_names=()):
    decay, no_decay = [], []
    for n, p in named:
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and n not in no_wd_names else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": wd})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def train(model, groups, data, seed, total_steps, lr, batch, seqlen, on_checkpoint=None,
          every=None, label=""):
    """AdamW, bf16 autocast, 10% warmup then cosine decay to 10%; on_checkpoint(i) every `every`."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)
    params = [p for g in groups for p in g["params"]]
    warm = max(1, total_steps // 10)
    model.train()
    t0 = time.time()
    for step in range(total_steps):
        if step < warm:
            cur = lr * (step + 1) / warm
        else:
            prog = (step - warm) / max(1, total_steps - warm)
            cur = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))
        for g in opt.param_groups:
            g["lr"] = cur
        starts = torch.randint(0, len(data) - seqlen - 1, (batch,), generator=gen)
        win = torch.stack([data[s:s + seqlen + 1] for s in starts.tolist()])
        # bf16 mixed precision (fp32 master weights, fp32 optimizer state): Debian's torch
        # uses the reference BLAS for fp32 matmuls, which is ~50x slower than oneDNN bf16.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(win[:, :-1])
        logits = logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), win[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if every and (step + 1) % every == 0:
            log("  %-10s step %4d/%d  loss %.4f  (%.1fs)" % (label, step + 1, total_steps,
                                                            loss.item(), time.time() - t0))
            if on_checkpoint:
                on_checkpoint((step + 1) // every)
    model.eval()


def snapshot(model):
    """A detached, contiguous, independently-stored copy of the state dict."""
    return OrderedDict((k, v.detach().clone().contiguous()) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- writers
ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def tensor_le_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    a = t.numpy()
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.astype(a.dtype.newbyteorder("<"))
    return a.tobytes()


def write_safetensors(path, sd, metadata=None):
    """Layout as the reference implementation writes it: tensors ordered by dtype
    (widest first) then name, header `__metadata__` first, padded with spaces to 8."""
    order = sorted(sd.keys(), key=lambda k: (-sd[k].element_size(), k))
    header, blobs, off = OrderedDict(), [], 0
    header["__metadata__"] = OrderedDict(metadata or {"format": "pt"})
    for k in order:
        b = tensor_le_bytes(sd[k])
        header[k] = OrderedDict(dtype=ST_DTYPES[sd[k].dtype], shape=list(sd[k].shape),
                                data_offsets=[off, off + len(b)])
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_pt(path, sd):
    torch.save(sd, path)  # zip format (the default); archive folder named after the file


def readme(parents_hf, relation, body):
    if len(parents_hf) == 1:
        bm = "base_model: %s\n" % parents_hf[0]
    else:
        bm = "base_model:\n" + "".join("- %s\n" % p for p in parents_hf)
    return "---\n%sbase_model_relation: %s\n---\n\n%s\n" % (bm, relation, body)


class Family:
    def __init__(self, out):
        self.out = out
        self.versions = []
        self.rows = []
        self.generator = None

    def add(self, model, version, sd, cfg, fmt, parents, message, predecessor=None,
            readme_text=None, st_meta=None):
        rel_dir = "%s/%s" % (model, version)
        final = os.path.join(self.out, model, version)
        tmp = os.path.join(self.out, model, "." + version + ".partial")
        for d in (tmp, final):
            if os.path.isdir(d):
                shutil.rmtree(d)
        os.makedirs(tmp)
        fname = "model.safetensors" if fmt == "safetensors" else "model.pt"
        if fmt == "safetensors":
            write_safetensors(os.path.join(tmp, fname), sd, st_meta)
        else:
            write_pt(os.path.join(tmp, fname), sd)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        files = [fname, "config.json"]
        if readme_text is not None:
            with open(os.path.join(tmp, "README.md"), "w") as f:
                f.write(readme_text)
            files.append("README.md")
        os.replace(tmp, final)
        plist = [OrderedDict(model=m, version=v, relation=r) for (m, v, r) in parents]
        self.versions.append(OrderedDict(
            model=model, version=version, path=rel_dir, parents=plist,
            relation=plist[0]["relation"] if plist else None, message=message,
            predecessor=predecessor))
        for fn in files:
            size = os.path.getsize(os.path.join(final, fn))
            self.rows.append((model, version, fn, size,
                              plist[0]["relation"] if plist else
                              ("(version of %s)" % predecessor if predecessor else "(root)")))
        log("wrote %-22s %s  %d params" % (rel_dir, fname, n_params(sd)))

    def finish(self):
        with open(os.path.join(self.out, "manifest.json"), "w") as f:
            json.dump(OrderedDict(versions=self.versions, generator=self.generator), f, indent=2)
            f.write("\n")
        w = max(len(r[0]) for r in self.rows)
        log("")
        log("%-*s  %-7s  %-18s  %12s  %s" % (w, "model", "version", "file", "bytes", "relation"))
        total = 0
        for m, v, fn, size, rel in self.rows:
            log("%-*s  %-7s  %-18s  %12d  %s" % (w, m, v, fn, size, rel))
            total += size
        log("total raw bytes: %d (%.1f MiB) in %d versions, %d files" % (
            total, total / 2**20, len(self.versions), len(self.rows)))
        return total


# ----------------------------------------------------------------------------- variants
def quantize_int8(sd):
    out = OrderedDict()
    quantized = []
    for k, v in sd.items():
        if v.dim() == 2 and k.startswith("model.layers."):
            amax = v.abs().amax(dim=1)
            scale = (amax / 127.0).clamp(min=1e-12).to(torch.float32)
            q = torch.round(v / scale[:, None]).clamp(-127, 127).to(torch.int8)
            out[k] = q.contiguous()
            out[k + ".scale"] = scale.contiguous()
            quantized.append(k)
        else:
            out[k] = v.clone()
    return out, quantized


def prune_50(sd):
    out = OrderedDict()
    for k, v in sd.items():
        if v.dim() == 2:
            flat = v.reshape(-1)
            n = flat.numel() // 2
            # stable ordering by |w| so ties are broken by position (deterministic)
            idx = torch.sort(flat.abs(), stable=True).indices[:n]
            w = flat.clone()
            w[idx] = 0.0
            out[k] = w.reshape(v.shape).contiguous()
        else:
            out[k] = v.clone()
    return out


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--small", action="store_true", help="a few-MB model (d=128, 4 layers)")
    ap.add_argument("--params", type=int, default=None,
                    help="approximate parameter count (default 25M; ignored with --small)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--corpus", action="append", metavar="DIR",
                    help="text root (repeatable; default %s). The output depends on these "
                         "files: manifest.json records their fingerprint" % " ".join(CORPUS_ROOTS))
    ap.add_argument("--steps", type=int, default=None,
                    help="optimizer steps between checkpoints / per stage "
                         "(default 20, --small 10)")
    args = ap.parse_args()

    torch.set_num_threads(2)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)

    small = args.small
    params = args.params or 25_000_000
    K = args.steps or (10 if small else 20)
    if K < 1:
        ap.error("--steps must be >= 1")
    cfg = make_config(params, small)
    d, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    batch, seqlen = (8, cfg["max_position_embeddings"]) if small else (8, 128)
    seqlen = min(seqlen, cfg["max_position_embeddings"])
    S = lambda name: stage_seed(args.seed, name)

    t_start = time.time()
    os.makedirs(args.out_dir, exist_ok=True)
    fam = Family(args.out_dir)

    cats, corpus_sha = collect_corpus(args.corpus or CORPUS_ROOTS)
    subsets = split_corpus(cats)
    fam.generator = OrderedDict(
        script="make_family.py", small=small, params=None if small else params, seed=args.seed, steps=K,
        corpus_roots=args.corpus or CORPUS_ROOTS, corpus_files=sum(map(len, cats.values())),
        corpus_sha256=corpus_sha)
    arrays = {k: docs_to_array(v) for k, v in subsets.items()}
    for k, a in arrays.items():
        if sum(len(x) for x in a) < 16 * cfg["max_position_embeddings"]:
            sys.exit("make_family: corpus subset %s is too small (%d docs); give --corpus "
                     "roots with more copyright/README/*.txt files" % (k, len(a)))
    data = {k: tokens_plain(a) for k, a in arrays.items() if k != "vocab-ext"}
    log("corpus: %d files, sha256 %s" % (fam.generator["corpus_files"], corpus_sha))
    log("subsets: " + ", ".join("%s %d docs/%d bytes" % (k, len(subsets[k]),
                                                          sum(len(a) for a in arrays[k]))
                                for k in arrays))

    # ------------------------------------------------------------------ base v1..v3
    torch.manual_seed(S("init"))
    base = TinyGPTForCausalLM(cfg)
    base.init_weights()
    log("model: d=%d layers=%d heads=%d ctx=%d vocab=%d -> %d params, batch %dx%d, %d steps/ckpt"
        % (d, L, cfg["num_attention_heads"], cfg["max_position_embeddings"], cfg["vocab_size"],
           sum(p.numel() for p in base.parameters()), batch, seqlen, K))
    fam.generator["model_params"] = sum(p.numel() for p in base.parameters())
    saved = {}

    def save_base(i):
        sd = snapshot(base)
        saved["base/v%d" % i] = sd
        fam.add("base", "v%d" % i, sd, cfg, "safetensors", [],
                "pre-training checkpoint after %d steps" % (i * K),
                predecessor=None if i == 1 else "base/v%d" % (i - 1),
                st_meta={"format": "pt"})

    train(base, param_groups(base.named_parameters(), 0.1), data["pretrain"], S("pretrain"),
          3 * K, 1e-3, batch, seqlen, save_base, K, "base")
    base_sd = saved["base/v3"]
    P = [("base", "v3", None)]

    def model_from(sd, c=cfg):
        m = TinyGPTForCausalLM(c)
        m.load_state_dict(sd)
        return m

    # ------------------------------------------------------------------ bf16 / int8 / pruned
    c = OrderedDict(cfg, torch_dtype="bfloat16")
    fam.add("bf16", "v1", OrderedDict((k, v.to(torch.bfloat16)) for k, v in base_sd.items()), c,
            "safetensors", [("base", "v3", "quantize")], "bfloat16 cast of base/v3")

    q_sd, qnames = quantize_int8(base_sd)
    c = OrderedDict(cfg, quantization_config=OrderedDict(
        quant_method="int8_per_channel_symmetric", bits=8, scale_suffix=".scale",
        scale_axis=0, formula="w = int8 * scale[:, None]",
        modules_not_converted=["model.embed_tokens", "model.embed_positions", "lm_head"]))
    fam.add("int8", "v1", q_sd, c, "pt", [("base", "v3", "quantize")],
            "int8 per-output-channel symmetric quantization of %d decoder Linear weights"
            % len(qnames),
            readme_text=readme(["base"], "quantized",
                               "# int8\n\nint8 per-output-channel quantization of base/v3."))

    c = OrderedDict(cfg, sparsity=OrderedDict(method="magnitude", granularity="per-tensor",
                                              target="all 2-D weights", ratio=0.5))
    fam.add("pruned", "v1", prune_50(base_sd), c, "pt", [("base", "v3", "prune")],
            "50% per-tensor magnitude pruning of the 2-D weights of base/v3")

    # ------------------------------------------------------------------ full fine-tunes
    for name in ["ft-a", "ft-b", "ft-c"]:
        m = model_from(base_sd)

        def save_ft(i, name=name, m=m):
            sd = snapshot(m)
            if i == 3:
                saved[name + "/v3"] = sd
            body = "# %s\n\nFull fine-tune of base/v3, checkpoint %d (%d steps)." % (name, i, i * K)
            fam.add(name, "v%d" % i, sd, cfg, "safetensors",
                    [("base", "v3", "finetune")] if i == 1 else [],
                    "full fine-tune checkpoint after %d steps" % (i * K),
                    predecessor=None if i == 1 else "%s/v%d" % (name, i - 1),
                    readme_text=readme(["base"], "finetune", body))

        train(m, param_groups(m.named_parameters(), 0.01), data[name], S(name), 3 * K, 1e-4,
              batch, seqlen, save_ft, K, name)
        del m

    # ------------------------------------------------------------------ partial fine-tunes
    for name in ["partial-a", "partial-b"]:
        m = model_from(base_sd)
        frozen = []
        for n, p in m.named_parameters():
            layer = int(n.split(".")[2]) if n.startswith("model.layers.") else None
            if n.startswith("model.embed_") or (layer is not None and layer < L // 2):
                p.requires_grad_(False)
                frozen.append(n)
        train(m, param_groups(m.named_parameters(), 0.01), data[name], S(name), K, 1e-4,
              batch, seqlen, None, K, name)
        sd = m.state_dict()
        for n in frozen:
            assert torch.equal(sd[n], base_sd[n]), n
        fam.add(name, "v1", sd, cfg, "pt", [("base", "v3", "finetune")],
                "fine-tune with embeddings and layers 0..%d frozen (%d tensors)"
                % (L // 2 - 1, len(frozen)),
                readme_text=readme(["base"], "finetune",
                                   "# %s\n\nPartial fine-tune of base/v3: embeddings and the "
                                   "lower %d layers frozen." % (name, L // 2)))
        del m

    # ------------------------------------------------------------------ LoRA (merged)
    m = model_from(base_sd)
    for p in m.parameters():
        p.requires_grad_(False)
    r, alpha = 4, 8
    scale = alpha / r
    torch.manual_seed(S("lora-init"))
    lora = []
    for i, layer in enumerate(m.model.layers):
        for proj in ("q_proj", "v_proj"):
            lin = getattr(layer.self_attn, proj)
            A = nn.Parameter(torch.empty(r, lin.in_features))
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))
            B = nn.Parameter(torch.zeros(lin.out_features, r))

            def fwd(x, lin=lin, A=A, B=B):
                return F.linear(x, lin.weight, lin.bias) + (x @ A.t() @ B.t()) * scale

            lin.forward = fwd
            lora.append((lin, A, B))
    groups = [{"params": [t for _, A, B in lora for t in (A, B)], "weight_decay": 0.0}]
    train(m, groups, data["lora"], S("lora"), K, 1e-3, batch, seqlen, None, K, "lora")
    with torch.no_grad():
        for lin, A, B in lora:
            del lin.forward
            lin.weight.copy_(lin.weight + (B @ A) * scale)
    c = OrderedDict(cfg, lora=OrderedDict(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"],
                                          merged=True, formula="W + (B @ A) * lora_alpha / r"))
    fam.add("lora", "v1", m.state_dict(), c, "pt", [("base", "v3", "adapter")],
            "rank-%d LoRA (alpha %d) on q_proj/v_proj, merged into the weights" % (r, alpha))
    del m, lora

    # ------------------------------------------------------------------ vocabulary extension
    merges = top_byte_pairs(arrays["vocab-ext"], N_NEW_TOKENS)
    vdata = tokens_with_merges(arrays["vocab-ext"], merges)
    vcfg = OrderedDict(cfg, vocab_size=BASE_VOCAB + N_NEW_TOKENS)
    vcfg["added_tokens"] = [OrderedDict(id=BASE_VOCAB + k, bytes_hex="%04x" % p)
                            for k, p in enumerate(merges)]
    m = TinyGPTForCausalLM(vcfg)
    with torch.no_grad():
        sd = OrderedDict()
        for k, v in base_sd.items():
            if k in ("model.embed_tokens.weight", "lm_head.weight"):
                new = torch.stack([(v[p // 256] + v[p % 256]) * 0.5 for p in merges])
                v = torch.cat([v, new])
            sd[k] = v.clone()
        m.load_state_dict(sd)
    trainable = [m.model.embed_tokens.weight, m.lm_head.weight]
    for p in m.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)

        def hook(g):
            g = g.clone()
            g[:BASE_VOCAB] = 0
            return g

        p.register_hook(hook)
    train(m, [{"params": trainable, "weight_decay": 0.0}], vdata, S("vocab-ext"), K, 1e-3,
          batch, seqlen, None, K, "vocab-ext")
    sd = m.state_dict()
    for k, v in base_sd.items():
        got = sd[k][:BASE_VOCAB] if k in ("model.embed_tokens.weight", "lm_head.weight") else sd[k]
        assert torch.equal(got, v), k
    fam.add("vocab-ext", "v1", sd, vcfg, "safetensors", [("base", "v3", "finetune")],
            "vocabulary extended by %d byte-pair tokens; only the new embedding/lm_head rows "
            "trained" % N_NEW_TOKENS,
            readme_text=readme(["base"], "finetune",
                               "# vocab-ext\n\nbase/v3 with %d new tokens; old rows unchanged."
                               % N_NEW_TOKENS))
    del m

    # ------------------------------------------------------------------ merge
    a, b = saved["ft-a/v3"], saved["ft-b/v3"]
    msd = OrderedDict((k, (0.5 * a[k] + 0.5 * b[k]).contiguous()) for k in a)
    fam.add("merge", "v1", msd, cfg, "safetensors",
            [("ft-a", "v3", "merge"), ("ft-b", "v3", "merge")],
            "linear merge 0.5*ft-a/v3 + 0.5*ft-b/v3",
            readme_text=readme(["ft-a", "ft-b"], "merge",
                               "# merge\n\nLinear 0.5/0.5 merge of ft-a/v3 and ft-b/v3."),
            st_meta={"format": "pt", "merge_method": "linear", "weights": "0.5,0.5"})

    fam.finish()
    log("done in %.1fs" % (time.time() - t_start))


if __name__ == "__main__":
    main()
