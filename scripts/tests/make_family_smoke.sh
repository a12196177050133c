#!/usr/bin/env bash
# Smoke test for scripts/make_family.py: generates the --small family twice into a temp
# dir and checks determinism, loadability of every checkpoint and the lineage properties
# (frozen / untouched tensors bit-identical to the parent, bf16/int8/prune/merge recipes).
# Usage: scripts/tests/make_family_smoke.sh [extra make_family.py args]
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GEN="$HERE/../make_family.py"
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/make_family_smoke.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "PASS: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

for run in 1 2; do
  if nice -n 19 "$PY" "$GEN" "$TMP/run$run" --small "$@" 2>"$TMP/log$run"; then
    ok "generate --small (run $run)"
  else
    bad "generate --small (run $run)"; tail -20 "$TMP/log$run"
  fi
done

sums() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs -r sha256sum); }
sums "$TMP/run1" >"$TMP/sum1"
sums "$TMP/run2" >"$TMP/sum2"
if [[ -s "$TMP/sum1" ]] && cmp -s "$TMP/sum1" "$TMP/sum2"; then
  ok "deterministic: $(wc -l <"$TMP/sum1") files byte-identical across runs"
else
  bad "runs differ:"; diff "$TMP/sum1" "$TMP/sum2" | head -10
fi
grep -q "total raw bytes" "$TMP/log1" && ok "summary table on stderr" || bad "no summary on stderr"

# Every check prints PASS:/FAIL: lines; the shell tallies them.
"$PY" - "$TMP/run1" >"$TMP/checks" 2>&1 <<'EOF'
import json, os, struct, sys, traceback
import numpy as np
import torch

root = sys.argv[1]
ST = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
      "U8": torch.uint8, "BOOL": torch.bool}
NP = {torch.float64: "f8", torch.float32: "f4", torch.float16: "f2", torch.bfloat16: "i2",
      torch.int64: "i8", torch.int32: "i4", torch.int16: "i2", torch.int8: "i1",
      torch.uint8: "u1", torch.bool: "?"}

def read_safetensors(path):
    """Minimal reader: validates the layout and returns {name: tensor}."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert 8 + n <= len(raw) and n % 8 == 0, "header length %d" % n
    hdr = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = hdr.pop("__metadata__", {})
    assert all(isinstance(v, str) for v in meta.values()), "metadata values must be strings"
    data = raw[8 + n:]
    out, spans = {}, []
    for name, info in hdr.items():
        dt = ST[info["dtype"]]
        b, e = info["data_offsets"]
        numel = int(np.prod(info["shape"])) if info["shape"] else 1
        assert e - b == numel * torch.empty(0, dtype=dt).element_size(), name
        spans.append((b, e))
        a = np.frombuffer(data, dtype=np.dtype("<" + NP[dt]), count=numel, offset=b)
        t = torch.from_numpy(a.astype(np.dtype("=" + NP[dt]), copy=True)).reshape(info["shape"])
        out[name] = t.view(dt) if dt == torch.bfloat16 else t
    spans.sort()
    pos = 0
    for b, e in spans:
        assert b == pos, "gap/overlap at %d" % b
        pos = e
    assert pos == len(data), "data section %d bytes, tensors cover %d" % (len(data), pos)
    return out

def check(name, fn):
    try:
        fn()
        print("PASS:", name)
    except Exception as e:
        print("FAIL:", name, "-", "".join(traceback.format_exception_only(type(e), e)).strip())

man = json.load(open(os.path.join(root, "manifest.json")))
vers = man["versions"]
sd = {}

def load_all():
    for v in vers:
        d = os.path.join(root, v["path"])
        for fn in sorted(os.listdir(d)):
            p = os.path.join(d, fn)
            if fn.endswith(".safetensors"):
                sd[v["path"]] = read_safetensors(p)
            elif fn.endswith(".pt"):
                sd[v["path"]] = torch.load(p, map_location="cpu")
        assert v["path"] in sd, "no checkpoint in " + v["path"]
        json.load(open(os.path.join(d, "config.json")))

def manifest_order():
    seen = set()
    rels = {"finetune", "quantize", "prune", "distill", "adapter", "merge", "other"}
    assert len(vers) == 20, len(vers)
    for v in vers:
        for p in v["parents"]:
            assert "%s/%s" % (p["model"], p["version"]) in seen, "parent after child: %s" % v["path"]
            assert p["relation"] in rels, p["relation"]
        if v["predecessor"]:
            assert v["predecessor"] in seen and v["predecessor"].split("/")[0] == v["model"]
        assert v["path"] == "%s/%s" % (v["model"], v["version"])
        seen.add(v["path"])

def n_files():
    npt = sum(1 for v in vers if os.path.exists(os.path.join(root, v["path"], "model.pt")))
    nst = sum(1 for v in vers if os.path.exists(os.path.join(root, v["path"], "model.safetensors")))
    assert npt == 5 and nst == 15, (npt, nst)
    print("  loaded %d .pt with torch.load and %d .safetensors with the inline reader" % (npt, nst))

def eq(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8) if a.dtype != torch.bool else a, b.view(-1).view(torch.uint8) if b.dtype != torch.bool else b)

base = lambda: sd["base/v3"]
L = lambda: 1 + max(int(k.split(".")[2]) for k in base() if k.startswith("model.layers."))

def partial(name):
    def f():
        p, b, half = sd[name], base(), L() // 2
        frozen = [k for k in b if k.startswith("model.embed_") or
                  (k.startswith("model.layers.") and int(k.split(".")[2]) < half)]
        assert frozen and all(eq(p[k], b[k]) for k in frozen), "frozen tensor differs"
        rest = [k for k in b if k not in frozen]
        assert all(not torch.equal(p[k], b[k]) for k in rest), "a trained tensor is unchanged"
        print("  %s: %d frozen tensors bit-identical to base/v3, %d changed" % (name, len(frozen), len(rest)))
    return f

def lora():
    p, b = sd["lora/v1"], base()
    diff = sorted(k for k in b if not eq(p[k], b[k]))
    want = sorted(k for k in b if k.endswith(("q_proj.weight", "v_proj.weight")))
    assert diff == want, diff
    d = p[want[0]] - b[want[0]]
    sv = torch.linalg.svdvals(d.double())  # rank 4 up to fp32 rounding of W + B@A*s
    assert sv[0] > 0 and sv[4] < 1e-3 * sv[0], "delta not rank 4: %s" % sv[:6].tolist()
    print("  lora: %d q/v weights changed, delta singular values %s" % (
        len(want), ["%.2g" % x for x in sv[:6].tolist()]))

def vocab():
    p, b = sd["vocab-ext/v1"], base()
    for k in b:
        if k in ("model.embed_tokens.weight", "lm_head.weight"):
            assert p[k].shape[0] == b[k].shape[0] + 64 and eq(p[k][: b[k].shape[0]].contiguous(), b[k]), k
        else:
            assert eq(p[k], b[k]), k

def bf16():
    p, b = sd["bf16/v1"], base()
    assert all(eq(p[k], b[k].to(torch.bfloat16)) for k in b)

def int8():
    p, b = sd["int8/v1"], base()
    qs = [k for k in p if p[k].dtype == torch.int8]
    assert qs and all(p[k + ".scale"].dtype == torch.float32 for k in qs)
    for k in qs:
        deq = p[k].float() * p[k + ".scale"][:, None]
        assert (deq - b[k]).abs().max() <= p[k + ".scale"].max() * 0.5 + 1e-7, k
    for k in b:
        if k not in qs:
            assert eq(p[k], b[k]), k

def pruned():
    p, b = sd["pruned/v1"], base()
    for k in b:
        if b[k].dim() == 2:
            z = (p[k] == 0)
            assert z.sum().item() == b[k].numel() // 2, k
            assert not torch.signbit(p[k][z]).any(), "negative zero in " + k
            assert torch.equal(p[k][~z], b[k][~z]), k
            assert b[k].abs()[z].max() <= b[k].abs()[~z].min(), "not magnitude order " + k
        else:
            assert eq(p[k], b[k]), k

def merge():
    p, a, b = sd["merge/v1"], sd["ft-a/v3"], sd["ft-b/v3"]
    assert all(eq(p[k], 0.5 * a[k] + 0.5 * b[k]) for k in a)

def finetunes():
    for m in ("ft-a", "ft-b", "ft-c"):
        prev = base()
        for v in ("v1", "v2", "v3"):
            cur = sd["%s/%s" % (m, v)]
            assert all(not torch.equal(cur[k], prev[k]) for k in prev), m + "/" + v
            prev = cur
        rd = open(os.path.join(root, m, "v1", "README.md")).read()
        assert rd.startswith("---\nbase_model: base\nbase_model_relation: finetune\n---\n"), rd[:80]

check("every checkpoint loads (torch.load / inline safetensors reader)", load_all)
if sd:
    check("checkpoint formats", n_files)
    check("manifest: parents before children, relations valid", manifest_order)
    check("partial-a frozen tensors == base/v3 bit for bit", partial("partial-a/v1"))
    check("partial-b frozen tensors == base/v3 bit for bit", partial("partial-b/v1"))
    check("lora: only q/v weights differ from base/v3, delta rank <= 4", lora)
    check("vocab-ext: +64 rows, old rows and other tensors bit-identical", vocab)
    check("bf16 == base/v3 cast to bfloat16", bf16)
    check("int8: int8 weights + fp32 .scale, within half a step; rest identical", int8)
    check("pruned: exactly 50% +0.0 by magnitude in 2-D tensors; rest identical", pruned)
    check("merge == 0.5*ft-a/v3 + 0.5*ft-b/v3", merge)
    check("ft-*: every tensor moves each checkpoint; README front matter", finetunes)
EOF
cat "$TMP/checks"
passed=$((passed + $(grep -c '^PASS:' "$TMP/checks")))
failed=$((failed + $(grep -c '^FAIL:' "$TMP/checks")))
grep -q '^PASS:\|^FAIL:' "$TMP/checks" || failed=$((failed + 1))

echo "make_family smoke: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
