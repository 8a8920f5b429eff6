#!/usr/bin/env bash
# npy_numpy.sh: routebench's .npy files against NumPy itself, the way a
# researcher uses them: NumPy writes q, k, v, dout, `routebench attn --load`
# runs the pass, NumPy reads the results and checks them against attention
# computed in NumPy (float64); every backend's --save output is read with
# np.load and checked against its manifest; arrays NumPy writes in forms
# routebench must refuse (float64, Fortran order) are refused, and a version
# 2.0 file is accepted. Needs a python3 with numpy: /usr/bin/python3 first
# (Debian's python3-numpy lives there), then python3 on PATH; skipped with a
# reason when neither imports numpy.
. "$(dirname "$0")/tap.bash"
PY=""
for cand in /usr/bin/python3 python3; do
  if "$cand" -c 'import numpy' >/dev/null 2>&1; then PY=$cand; break; fi
done
if [ -z "$PY" ]; then
  echo "1..0 # SKIP no python3 with numpy (tried /usr/bin/python3 and python3; apt-get install python3-numpy)"
  exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "# using $PY (numpy $("$PY" -c 'import numpy; print(numpy.__version__)'))"

# The reference both directions use: attention in float64 from the definition.
cat >"$tmp/ref.py" <<'EOF'
import numpy as np
def attention(q, k, v, dout, causal):
    q, k, v, dout = (x.astype(np.float64) for x in (q, k, v, dout))
    d = q.shape[-1]; n = q.shape[-2]
    s = q @ k.swapaxes(-1, -2) / np.sqrt(d)
    if causal:
        s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
    out = p @ v
    dp = dout @ v.swapaxes(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / np.sqrt(d)
    return out, ds @ k, ds.swapaxes(-1, -2) @ q, p.swapaxes(-1, -2) @ dout
def worst(mine, ref):
    return max(float(np.abs(m.astype(np.float64) - r).max() / max(np.abs(r).max(), 1e-30)) for m, r in zip(mine, ref))
EOF

# 1. NumPy writes the inputs, routebench computes, NumPy checks.
for causal in 1 0; do
  d="$tmp/np$causal"; mkdir -p "$d"
  "$PY" - "$d" <<'EOF'
import sys, numpy as np
d = sys.argv[1]; rng = np.random.default_rng(5)
for name in ("q", "k", "v", "dout"):
    np.save(f"{d}/{name}.npy", rng.standard_normal((2, 3, 48, 16)).astype(np.float32))
EOF
  flag=""; [ $causal = 0 ] && flag="--no-causal"
  $RB attn --backend dense --load "$d" $flag >"$tmp/o" 2>&1; rc=$?
  ok $rc "attn --load reads NumPy-written inputs (causal=$causal): $(head -c 200 "$tmp/o")"
  msg=$(PYTHONPATH="$tmp" "$PY" - "$d" $causal <<'EOF'
import sys, json, numpy as np, ref
d, causal = sys.argv[1], int(sys.argv[2])
a = {n: np.load(f"{d}/{n}.npy") for n in ("q", "k", "v", "dout", "out", "dq", "dk", "dv")}
assert all(a[n].dtype == np.float32 and a[n].shape == (2, 3, 48, 16) for n in a), "dtype/shape"
e = ref.worst([a[n] for n in ("out", "dq", "dk", "dv")], ref.attention(a["q"], a["k"], a["v"], a["dout"], causal))
m = json.load(open(f"{d}/manifest.json"))
assert m["params"]["seq"] == 48 and m["params"]["heads"] == 3 and m["params"]["causal"] == bool(causal), m["params"]
print(f"worst relative error {e:.3g}")
sys.exit(0 if e < 1e-5 else 1)
EOF
)
  ok $? "NumPy's attention (float64) agrees with routebench's out, dq, dk, dv (causal=$causal): $msg"
done

# 2. Every backend's --save output reads with np.load and matches its manifest.
for be in $($RB backends --names); do
  d="$tmp/save-$be"
  $RB attn --backend "$be" --seq 64 --heads 2 --head-dim 16 --batch 2 --seed 3 --save "$d" >"$tmp/o" 2>&1
  ok $? "$be: attn --save runs: $(head -c 200 "$tmp/o")"
  msg=$(PYTHONPATH="$tmp" "$PY" - "$d" <<'EOF'
import sys, json, numpy as np, ref
d = sys.argv[1]
m = json.load(open(f"{d}/manifest.json"))
for name, info in m["arrays"].items():
    with open(f"{d}/{info['file']}", "rb") as f:
        version = np.lib.format.read_magic(f)
        assert version == (1, 0), (name, version)
        np.lib.format.read_array_header_1_0(f)
        assert f.tell() % 64 == 0, (name, "data offset", f.tell())
    x = np.load(f"{d}/{info['file']}", allow_pickle=False)
    assert x.dtype == np.dtype(info["dtype"]) and list(x.shape) == info["shape"], (name, x.dtype, x.shape, info)
    assert x.flags["C_CONTIGUOUS"]
    if x.dtype == np.float32: assert np.isfinite(x).all(), name
p = m["params"]
if "members" in m["arrays"]:
    mem = np.load(f"{d}/members.npy")
    assert mem.shape[:3] == (p["batch"], p["heads"], p["clusters"])
    assert ((mem >= -1) & (mem < p["seq"])).all()
    routed = (mem >= 0).any(axis=(2, 3))          # heads with membership (hybrid: not the local ones)
    assert routed.any() and ((mem >= 0).any(axis=3)[routed].all() or p["assign"] != "topk")
print(f"{len(m['arrays'])} arrays")
EOF
)
  ok $? "$be: every array in manifest.json loads with np.load, format 1.0, data 64-byte aligned, dtype and shape as listed: $msg"
done

# 2b. Clustered attention rebuilt in NumPy from the saved cluster membership:
# inside each cluster, members attend by true position (causal: keys at or
# before the query); with shared Q = K the keys are the L2-normalised queries
# and a token skips itself unless it sees nothing else; each token's output
# is the mean over the clusters that picked it (0 when none). Heads without
# membership (hybrid's local heads) are not compared.
cat >"$tmp/routed.py" <<'EOF'
import sys, json, numpy as np
d = sys.argv[1]
m = json.load(open(f"{d}/manifest.json")); p = m["params"]
q, k, v, dout, out, dv = (np.load(f"{d}/{n}.npy").astype(np.float64) for n in ("q", "k", "v", "dout", "out", "dv"))
mq = np.load(f"{d}/members.npy")
shared = "members_k" not in m["arrays"]
mk = mq if shared else np.load(f"{d}/members_k.npy")
B, H, T, D = q.shape
ref_out = np.zeros_like(out); ref_dv = np.zeros_like(dv); worst = 0.0; heads = 0
for b in range(B):
    for h in range(H):
        if (mq[b, h] < 0).all(): continue
        heads += 1
        keys = q[b, h] / np.linalg.norm(q[b, h], axis=-1, keepdims=True) if shared else k[b, h]
        count = np.zeros(T); acc = np.zeros((T, D)); parts = []
        for c in range(mq.shape[2]):
            Q = mq[b, h, c][mq[b, h, c] >= 0]; K = mk[b, h, c][mk[b, h, c] >= 0]
            if len(Q) == 0: continue
            s = q[b, h][Q] @ keys[K].T / np.sqrt(D)
            vis = (K[None, :] <= Q[:, None]) if p["causal"] else np.ones((len(Q), len(K)), bool)
            if shared:
                own = K[None, :] == Q[:, None]
                vis = vis & ~(own & ((vis & ~own).sum(1, keepdims=True) > 0))
            s = np.where(vis, s, -np.inf)
            mx = s.max(1, keepdims=True); mx[~np.isfinite(mx)] = 0
            e = np.where(vis, np.exp(s - mx), 0); z = e.sum(1, keepdims=True)
            P = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
            acc[Q] += P @ v[b, h][K]; count[Q] += 1; parts.append((Q, K, P))
        ref_out[b, h] = np.where(count[:, None] > 0, acc / np.maximum(count, 1)[:, None], 0)
        for Q, K, P in parts:
            ref_dv[b, h][K] += P.T @ (dout[b, h][Q] / count[Q][:, None])
        for mine, ref in ((out[b, h], ref_out[b, h]), (dv[b, h], ref_dv[b, h])):
            worst = max(worst, float(np.abs(mine - ref).max() / max(np.abs(ref).max(), 1e-30)))
print(f"{heads} routed heads, {'shared' if shared else 'separate'} keys, worst relative error of out and dv {worst:.3g}")
sys.exit(0 if heads > 0 and worst < 1e-5 else 1)
EOF
for be in $($RB backends --names); do
  [ -e "$tmp/save-$be/members.npy" ] || continue
  msg=$("$PY" "$tmp/routed.py" "$tmp/save-$be" 2>&1 | tail -c 300)
  ok $? "$be (causal): out and dv rebuilt in NumPy from q, k, v, dout and members.npy: $msg"
  d="$tmp/save-$be-bidir"
  $RB attn --backend "$be" --seq 64 --heads 2 --head-dim 16 --batch 2 --seed 4 --no-causal --share-qk 0 \
      --assign argmax --save "$d" >"$tmp/o" 2>&1
  ok $? "$be: attn --save bidirectional, separate keys, argmax: $(head -c 200 "$tmp/o")"
  msg=$("$PY" "$tmp/routed.py" "$d" 2>&1 | tail -c 300)
  ok $? "$be (bidirectional, separate keys, ragged clusters): out and dv rebuilt in NumPy from members.npy and members_k.npy: $msg"
done

# 3. What NumPy can write that routebench must refuse or accept.
d="$tmp/odd"; mkdir -p "$d"
"$PY" - "$d" <<'EOF'
import sys, numpy as np
d = sys.argv[1]; rng = np.random.default_rng(1)
x = rng.standard_normal((1, 1, 32, 8)).astype(np.float32)
np.save(f"{d}/f64.npy", x.astype(np.float64))
np.save(f"{d}/fortran.npy", np.asfortranarray(x))
np.save(f"{d}/i4.npy", (x * 100).astype(np.int32))
with open(f"{d}/v2.npy", "wb") as f:
    np.lib.format.write_array(f, x, version=(2, 0))
np.save(f"{d}/x.npy", x)
EOF
load_as_q() { # copy file $1 to q.npy of a fresh input directory, run --load
  local dd="$tmp/case"; rm -rf "$dd"; mkdir -p "$dd"
  cp "$d/x.npy" "$dd/k.npy"; cp "$d/x.npy" "$dd/v.npy"; cp "$d/x.npy" "$dd/dout.npy"; cp "$1" "$dd/q.npy"
  $RB attn --backend dense --seq 32 --head-dim 8 --load "$dd" >"$tmp/o" 2>&1
}
load_as_q "$d/f64.npy"; rc=$?
[ $rc = 2 ] && grep -q "dtype '<f8', expected '<f4'" "$tmp/o"; ok $? "float64 from NumPy refused (exit $rc): $(head -c 200 "$tmp/o")"
load_as_q "$d/fortran.npy"; rc=$?
[ $rc = 2 ] && grep -q "Fortran order" "$tmp/o"; ok $? "Fortran-order array from NumPy refused (exit $rc): $(head -c 200 "$tmp/o")"
load_as_q "$d/i4.npy"; rc=$?
[ $rc = 2 ] && grep -q "dtype '<i4', expected '<f4'" "$tmp/o"; ok $? "int32 where float32 is needed refused (exit $rc): $(head -c 200 "$tmp/o")"
load_as_q "$d/v2.npy"; rc=$?
ok $rc "version 2.0 file from NumPy accepted: $(head -c 200 "$tmp/o")"
cp "$tmp/case/out.npy" "$tmp/out-v2.npy"
load_as_q "$d/x.npy"
cmp -s "$tmp/case/out.npy" "$tmp/out-v2.npy"; ok $? "the version 2.0 file gives the same result as version 1.0"

# 4. A model's parameters out to NumPy, changed there, and back in.
m="$tmp/model"; mkdir -p "$m"
cfg="--task random --random-vocab 40 --d-model 16 --heads 2 --layers 2 --seq 16 --batch 2 --mlp-mult 2"
$RB train $cfg --steps 2 --save "$m/a.ckpt" >"$tmp/o" 2>&1
ok $? "train a tiny model and save a checkpoint: $(tail -c 200 "$tmp/o" | tr '\n' ' ')"
$RB export "$m/a.ckpt" "$m/x" $cfg >"$tmp/o" 2>&1
ok $? "export: $(head -c 200 "$tmp/o")"
msg=$("$PY" - "$m/x" <<'EOF2'
import sys, json, numpy as np
d = sys.argv[1]
man = json.load(open(f"{d}/manifest.json"))
c = man["config"]
p = {n: np.load(f"{d}/{a['file']}") for n, a in man["arrays"].items()}
C, L = c["d_model"], c["layers"]
assert p["wte.weight"].shape == (c["vocab"], C) and p["h.0.attn.qkv.weight"].shape == (3 * C, C)
assert sum(x.size for n, x in p.items() if not n.endswith("centroids")) == man["parameters"]
for n, x in p.items():   # NumPy's edit: scale every weight by 2 (exact in float32)
    np.save(f"{d}/{n}.npy", (x * 2).astype(np.float32))
print(f"{len(p)} arrays, {man['parameters']} parameters")
EOF2
)
ok $? "NumPy reads the exported model against its manifest and writes it back doubled: $msg"
$RB import "$m/x" "$m/b.ckpt" >"$tmp/o" 2>&1
ok $? "import the NumPy-written parameters: $(head -c 200 "$tmp/o")"
$RB export "$m/b.ckpt" "$m/y" $cfg >"$tmp/o" 2>&1
ok $? "export the imported checkpoint: $(head -c 200 "$tmp/o")"
msg=$("$PY" - "$m/x" "$m/y" <<'EOF2'
import sys, json, numpy as np
x, y = sys.argv[1], sys.argv[2]
man = json.load(open(f"{x}/manifest.json"))
bad = [n for n in man["arrays"] if not np.array_equal(np.load(f"{x}/{n}.npy"), np.load(f"{y}/{n}.npy"))]
print("differ: " + ", ".join(bad) if bad else f"all {len(man['arrays'])} equal")
sys.exit(1 if bad else 0)
EOF2
)
ok $? "what NumPy wrote is what routebench exports again, bit for bit: $msg"
mv "$m/x/ln_f.bias.npy" "$m/x/ln_f.beta.npy"
$RB import "$m/x" "$m/c.ckpt" >"$tmp/o" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "missing: ln_f.bias.npy" "$tmp/o" && grep -q "unexpected: ln_f.beta.npy" "$tmp/o" && [ ! -e "$m/c.ckpt" ]
ok $? "import with a renamed array refused, both names given, no checkpoint written (exit $rc): $(head -c 300 "$tmp/o")"

tap_end
