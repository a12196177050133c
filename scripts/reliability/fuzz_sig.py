#!/usr/bin/python3
"""Signature of a libFuzzer crash log, to tell a new bug from a known one.

    fuzz_sig.py LOG ROOT    prints '<kind> @ <function> (<file>)' (file relative to ROOT)

kind: the sanitizer error class, the uncaught exception, the violated
invariant, or timeout/oom; the location: the function of the first stack
frame in the project's own code (not tests/fuzz, not system headers), else the first frame.
"""
import re
import sys


def signature(text, root):
    kind = None
    for pat, fmt in [
        (r"invariant violated: ([^(\n]*)", "invariant: {}"),
        (r"what\(\):\s+\[json\.exception\.([a-z_]+\.\d+)\]", "uncaught json {}"),
        (r"terminate called after throwing an instance of '([^']+)'", "uncaught {}"),
        (r"runtime error: ([^\n]*)", "ubsan: {}"),
        (r"ERROR: AddressSanitizer: ([\w-]+)", "asan: {}"),
        (r"ERROR: LeakSanitizer: ([\w ]+)", "lsan: {}"),
        (r"ERROR: libFuzzer: (timeout|out-of-memory|fuzz target exited|deadly signal)", "{}"),
        (r"Assertion `([^']*)' failed", "assert: {}"),
    ]:
        m = re.search(pat, text)
        if m:
            k = m.group(1).strip()
            if fmt.startswith("ubsan"):
                k = re.sub(r"-?\d[\d.e+]*", "N", k)  # values differ between inputs
            kind = fmt.format(k[:120])
            break
    kind = kind or "crash"
    frames = re.findall(r"#\d+ 0x[0-9a-f]+ in (.*?) (/[^ \n:]+):(\d+)", text)
    loc = None
    for func, path, line in frames:
        if path.startswith(root + "/") and "/tests/fuzz/" not in path:
            # the function, not the line: one bug reached through two lines is one bug
            func = re.sub(r"^.* (?=[\w:~]+\()", "", func.split("(")[0] + "(").rstrip("(")
            func = re.sub(r"\[abi:\w+\]", "", func)
            loc = f"{func} ({path[len(root) + 1:]})"
            break
    if loc is None and frames:
        path = frames[0][1]
        loc = path[len(root) + 1:] if path.startswith(root + "/") else path
    return f"{kind} @ {loc or '?'}"


if __name__ == "__main__":
    with open(sys.argv[1], errors="replace") as f:
        print(signature(f.read(), sys.argv[2].rstrip("/")))
