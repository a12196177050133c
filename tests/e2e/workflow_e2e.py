#!/usr/bin/python3
"""End-to-end: tests over the lineage graph, bisect and an update cascade.

Builds a real (tiny) family with scripts/examples/tinyml.py, whose commands
double as recorded recipes, and drives `lineagefs test add/run`, `bisect`,
`stale` and `cascade`; every command reads versions through a real FUSE
mount that the CLI mounts and unmounts itself. Checks:
  * a test registered on a relation runs on exactly the matching versions,
    including versions added after it was registered;
  * results show in `show --json` and as user.lineage.test.<name> xattrs;
  * bisect finds a planted bad fine-tune in <= ceil(log2 n) + 1 runs;
  * a cascade after a new base rebuilds every descendant (a merge after
    both of its parents) with real fine-tuning, the rebuilt versions pass
    their tests and carry the right parents and predecessor; a failing
    recipe stops its branch and commits nothing; a rerun is idempotent;
  * fsck is clean and no private mount is left behind.
"""
import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "scripts", "examples", "tinyml.py")
PY = "/usr/bin/python3"
DEADLINE_S = 900

checks = 0
WORK = []  # the scratch dir: commands run there, so an injected `touch` would land in it


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1
    print(f"ok   {what}", flush=True)


def run(args, ok=True, **kw):
    kw.setdefault("cwd", WORK[0] if WORK else None)
    p = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=600, **kw)
    if ok and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def private_mounts():
    with open("/proc/mounts") as f:
        return [l.split()[1] for l in f if "lineagefs-mnt-" in l]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lineagefs", required=True)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 10000)
    a = ap.parse_args()
    lfs = os.path.abspath(a.lineagefs)
    rnd = random.Random(a.seed)
    print(f"seed {a.seed}")

    def on_alarm(*_):
        raise TimeoutError(f"workflow_e2e exceeded {DEADLINE_S} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(DEADLINE_S)
    work = tempfile.mkdtemp(prefix="lfs-workflow-")
    WORK.append(work)
    store = os.path.join(work, "store")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    daemon = None
    try:
        L = lambda *args, **kw: run([lfs, *args], **kw)
        J = lambda *args: json.loads(L(*args, "--json").stdout)
        T = lambda *args: run([PY, TINY, *args])
        L("init", store)

        def make(model, recipe, parents, relation="finetune", outdir=None):
            """Runs a recipe by hand (as its author did) and imports the result
            with the recipe recorded."""
            out = outdir or tempfile.mkdtemp(dir=work)
            ppaths = [os.path.join(work, "x", p) for p in parents]
            cmd = recipe.replace("{out_path}", out)
            for i, p in enumerate(ppaths):
                cmd = cmd.replace(f"{{parent_path.{i}}}", p)
            if ppaths:
                cmd = cmd.replace("{parent_path}", ppaths[0])
            run(["sh", "-c", cmd])
            args = ["import", store, out, "--model", model, "--relation", relation,
                    "--recipe", recipe]
            for p in parents:
                args += ["--parent", p]
            r = json.loads(L(*args, "--json").stdout)
            key = f"{r['model']}/{r['version']}"
            shutil.copytree(out, os.path.join(work, "x", key))  # for later recipes
            return key

        base1 = make("base", f"{PY} {TINY} base {{out_path}} --steps 20", [])
        ft = make("ft", f"{PY} {TINY} finetune {{parent_path}} {{out_path}} --seed 1", [base1])
        ftb = make("ftb", f"{PY} {TINY} finetune {{parent_path}} {{out_path}} --seed 2 --steps 15",
                   [base1])
        q = make("q8", f"{PY} {TINY} quantize {{parent_path}} {{out_path}}", [ft], "quantize")
        merged = make("merged", f"{PY} {TINY} merge {{parent_path.0}} {{parent_path.1}} {{out_path}}",
                      [ft, ftb], "merge")
        broken = make("broken", f"{PY} {TINY} finetune {{parent_path}} {{out_path}}", [base1])
        # broken2's recorded recipe no longer works (the script it names is gone).
        L("import", store, os.path.join(work, "x", broken), "--model", "broken2",
          "--parent", base1, "--recipe", f"{PY} /nonexistent/train.py {{parent_path}} {{out_path}}")
        shutil.copytree(os.path.join(work, "x", broken), os.path.join(work, "x", "broken2/v1"))
        broken_kid = make("brokenkid", f"{PY} {TINY} finetune {{parent_path}} {{out_path}}",
                          ["broken2/v1"])

        # A model name built to inject shell commands into recipes and tests.
        evil = make("evil$(touch pwned);`touch pwned` x", f"{PY} {TINY} finetune {{parent_path}} "
                    "{out_path}", [base1])
        # Two checkpoints of one model: each rebuild must replace its own.
        ck1 = make("ckpt", f"{PY} {TINY} finetune {{parent_path}} {{out_path}} --seed 3", [base1])
        ck2 = make("ckpt", f"{PY} {TINY} finetune {{parent_path}} {{out_path}} --seed 4", [base1])
        # A branch whose rebuild will fail its tests.
        regress = make("regress", f"{PY} {TINY} finetune {{parent_path}} {{out_path}}", [base1])
        regress_kid = make("regresskid", f"{PY} {TINY} finetune {{parent_path}} {{out_path}}",
                           [regress])

        # --- tests over the graph -------------------------------------------
        L("test", "add", store, "acc", "--all", "--cmd", f"{PY} {TINY} eval {{path}}",
          "--pass-if", "acc>=0.75")
        L("test", "add", store, "quant-drop", "--relation", "quantize",
          "--cmd", f"{PY} {TINY} eval {{path}} --against {{parent_path}}",
          "--pass-if", "drop<=0.02")
        bad = L("test", "add", store, "typo", "--cmd", "true", "--pass-if", "acc>>0.8", ok=False)
        check(bad.returncode != 0 and "acc>>0.8" in bad.stderr,
              "a malformed --pass-if is refused at `test add`: " + bad.stderr.strip())
        res = J("test", "run", store, "-j", "2")
        ran = {(r["version"], r["test"]) for r in res["results"]}
        committed = [f"{m}/v1" for m in ["base", "ft", "ftb", "q8", "merged", "broken",
                                         "brokenkid", "broken2", "regress", "regresskid"]]
        committed += [evil, ck1, ck2]
        check(all((v, "acc") in ran for v in committed), "the --all test ran on every version")
        check({v for v, t in ran if t == "quant-drop"} == {q},
              "the relation test ran on exactly the quantize versions")
        check(res["failed"] == 0, f"all tests pass on the family ({res['failed']} failed)")
        again = J("test", "run", store)
        check(again["results"] == [], "a second `test run` has nothing pending")
        # A version added later picks up the relation test automatically.
        q2 = make("q8b", f"{PY} {TINY} quantize {{parent_path}} {{out_path}}", [ftb], "quantize")
        pend = J("test", "run", store)
        check({(r["version"], r["test"]) for r in pend["results"]} ==
              {(q2, "acc"), (q2, "quant-drop")}, "tests apply to versions added later")
        show = J("show", store, q)
        t = show["metadata"]["tests"]["quant-drop"]
        check(t["passed"] and "drop" in t["metrics"] and f"--against " in t["cmd"] and
              t["cmd"].endswith("/ft/v1") and t["duration_s"] >= 0 and t["time"].endswith("Z"),
              "results (metrics, command, duration, time) are in show --json")

        # Results are xattrs on the mount.
        daemon = subprocess.Popen([lfs, "mount", store, mnt, "-f"], stderr=subprocess.DEVNULL)
        for _ in range(300):
            if os.path.ismount(mnt):
                break
            time.sleep(0.05)
        x = run(["getfattr", "-n", "user.lineage.test.quant-drop", "--only-values",
                 os.path.join(mnt, "q8", "v1")]).stdout
        check(json.loads(x)["passed"] is True, "user.lineage.test.<name> xattr on the mount")
        run(["fusermount3", "-u", mnt])
        daemon.wait(timeout=30)
        daemon = None

        # A hung test is killed at its timeout (with what it started) and fails.
        L("test", "add", store, "hang", "--model", "base", "--timeout", "1",
          "--cmd", "sleep 60 & sleep 60; echo acc=1")
        t0 = time.monotonic()
        h = L("test", "run", store, base1, "--test", "hang", "--json", ok=False)
        hr = json.loads(h.stdout)["results"][0]
        check(h.returncode == 1 and hr["timed_out"] and not hr["passed"] and
              time.monotonic() - t0 < 30, "a hung test times out and fails")
        L("test", "rm", store, "hang")
        # A test that exits leaving a process holding its stdout passes at once.
        L("test", "add", store, "bg", "--model", "base", "--timeout", "60",
          "--cmd", "sleep 77.7 & echo acc=1", "--pass-if", "acc==1")
        t0 = time.monotonic()
        b = json.loads(L("test", "run", store, base1, "--test", "bg", "--json").stdout)
        check(b["results"][0]["passed"] and time.monotonic() - t0 < 30 and
              run(["pgrep", "-f", "sleep 77.7"], ok=False).returncode == 1,
              "a test leaving a background process passes at once; the process is reaped")
        # Bytes that are not UTF-8 (a progress bar cut mid-character) are fine.
        L("test", "add", store, "bytes", "--model", "base", "--pass-if", "acc==1", "--cmd",
          "printf '\\342\\226'; head -c 3000 /dev/urandom; printf '\\nacc=1\\n'")
        b = json.loads(L("test", "run", store, base1, "--test", "bytes", "--json").stdout)
        check(b["results"][0]["passed"], "binary test output is recorded, not a crash")
        for name in ["bg", "bytes"]:
            L("test", "rm", store, name)
        # ^C during a run: the test's processes die, nothing is recorded, the
        # private mount goes.
        L("test", "add", store, "hang2", "--model", "base", "--cmd", "sleep 61.5")
        proc = subprocess.Popen([lfs, "test", "run", store, base1, "--test", "hang2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work)
        seen = []
        for _ in range(400):
            seen = private_mounts()
            if seen and run(["pgrep", "-f", "sleep 61.5"], ok=False).returncode == 0:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        check(seen and proc.returncode != 0 and private_mounts() == [] and
              not any(os.path.exists(m) for m in seen) and
              run(["pgrep", "-f", "sleep 61.5"], ok=False).returncode == 1 and
              "hang2" not in J("show", store, base1)["metadata"].get("tests", {}),
              "^C stops the test, records nothing, unmounts and removes the mount dir")
        L("test", "rm", store, "hang2")

        # --- bisect -----------------------------------------------------------
        n = 12
        bad_at = rnd.randrange(1, n)  # position of the planted corruption
        chain = [make("cbase", f"{PY} {TINY} base {{out_path}} --steps 40", [])]
        for i in range(1, n):
            extra = " --corrupt" if i == bad_at else ""
            chain.append(make(f"c{i}", f"{PY} {TINY} finetune {{parent_path}} {{out_path}} "
                              f"--seed {i}{extra}", [chain[-1]]))
        r = J("bisect", store, f"{chain[0]}..{chain[-1]}", "--test", "acc")
        bound = math.ceil(math.log2(n)) + 1
        check(r["first_bad"] == chain[bad_at],
              f"bisect finds the planted bad version {chain[bad_at]} (got {r['first_bad']})")
        check(r["runs"] <= bound, f"in {r['runs']} runs <= ceil(log2 {n})+1 = {bound}")
        check(len(r["path"]) == n, "along the whole lineage path")

        # --- cascade ------------------------------------------------------------
        base2 = make("base", f"{PY} {TINY} base {{out_path}} --steps 150", [])
        stale = {s["version"] for s in J("stale", store)}
        want = {ft, ftb, q, merged, broken, broken_kid, "broken2/v1", q2, evil, ck1, ck2}
        check(want <= stale, "stale lists every descendant of the old base")
        plan = J("cascade", store, base1, base2, "--dry-run")
        steps = {s["target"]: s for s in plan["steps"]}
        check(steps[merged]["wave"] > max(steps[ft]["wave"], steps[ftb]["wave"]),
              "the plan rebuilds a merge after both of its parents")
        versions_before = {m: len(J("log", store, m)) for m in ["ft", "q8", "merged"]}
        check(all(v == 1 for v in versions_before.values()), "dry run changes nothing")

        L("test", "add", store, "strict", "--model", "regress",
          "--cmd", f"{PY} {TINY} eval {{path}}", "--pass-if", "acc>=0.99")
        p = L("cascade", store, base1, base2, "-j", "2", "--json", ok=False)
        out = json.loads(p.stdout)
        check(p.returncode == 1 and out["failed"] == 2 and out["skipped"] == 2,
              "cascade reports the failing recipe and the failing test (exit 1), skips their "
              "branches")
        status = {r["target"]: r for r in out["results"]}
        check(status["broken2/v1"]["status"] == "failed" and
              "recipe exited" in status["broken2/v1"]["reason"], "the failing recipe is named")
        check(status[broken_kid]["status"] == "skipped", "the failed branch stops there")
        check(status[regress]["status"] == "failed" and "test(s) failed" in
              status[regress]["reason"] and status[regress_kid]["status"] == "skipped",
              "a rebuild failing its tests is not committed; its branch stops")
        check(len(J("log", store, "regress")) == 1, "... and its draft is gone")
        for target in [ft, ftb, q, merged, broken, q2, evil, ck1, ck2]:
            check(status[target]["status"] == "rebuilt", f"{target} rebuilt")
        check(len(J("log", store, "broken2")) == 1 and len(J("log", store, "brokenkid")) == 1,
              "a failed rebuild leaves no version or draft")
        new = {t: status[t]["version"] for t in status if status[t]["status"] == "rebuilt"}
        v_ft = J("show", store, new[ft])
        check([p["parent"] for p in v_ft["parents"]] == [base2] and v_ft["predecessor"] == "v1",
              "the rebuilt fine-tune derives from the new base; its predecessor is the old one")
        preds = {J("show", store, new[k])["predecessor"] for k in [ck1, ck2]}
        check(preds == {"v1", "v2"}, "each rebuilt checkpoint replaces its own predecessor")
        check(not os.path.exists(os.path.join(work, "pwned")) and
              not os.path.exists("pwned"), "a hostile model name injected nothing")
        v_m = J("show", store, new[merged])
        check(sorted(p["parent"] for p in v_m["parents"]) == sorted([new[ft], new[ftb]]),
              "the rebuilt merge derives from both rebuilt parents")
        v_q = J("show", store, new[q])
        check(v_q["parents"][0]["parent"] == new[ft] and
              v_q["parents"][0]["relation"] == "quantize", "the rebuilt int8 keeps its relation")
        check(v_q["metadata"]["tests"]["quant-drop"]["passed"] and
              v_q["metadata"]["tests"]["acc"]["passed"], "rebuilt versions passed their tests")
        check(v_q["metadata"]["cascade"]["rebuilt_from"] == q, "provenance of the rebuild")
        acc_old = J("show", store, ft)["metadata"]["tests"]["acc"]["metrics"]["acc"]
        acc_new = v_ft["metadata"]["tests"]["acc"]["metrics"]["acc"]
        check(acc_new > acc_old, f"the better base carried through ({acc_old} -> {acc_new})")
        # Recipes really ran against the new parent: the export is what the
        # recipe produces from base2 by hand.
        exp = os.path.join(work, "exp")
        L("export", store, new[ft], exp)
        ref = os.path.join(work, "ref")
        T("finetune", os.path.join(work, "x", base2), ref, "--seed", "1")
        same = open(os.path.join(exp, "model.safetensors"), "rb").read() == \
            open(os.path.join(ref, "model.safetensors"), "rb").read()
        check(same, "the rebuilt fine-tune is bit-identical to running its recipe by hand")
        stale2 = {s["version"] for s in J("stale", store)}
        check(not (stale2 & {ft, ftb, q, merged}), "rebuilt versions are no longer stale")
        p2 = L("cascade", store, base1, base2, "--json", ok=False)
        out2 = json.loads(p2.stdout)
        check(out2["rebuilt"] == 0 and
              all(s["already_rebuilt"] for s in out2["steps"] if s["target"] in new),
              "a second cascade reuses what is done and rebuilds nothing")
        fsck = L("fsck", store, ok=False)
        check(fsck.returncode == 0, "fsck clean after the workflows:\n" + fsck.stdout[-2000:])
        check(private_mounts() == [], "no private mount left behind")
        print(f"workflow_e2e: {checks} checks passed (seed {a.seed})")
        return 0
    finally:
        signal.alarm(0)
        if daemon is not None:
            subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
            daemon.kill()
        for m in private_mounts():
            subprocess.run(["fusermount3", "-uz", m], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
