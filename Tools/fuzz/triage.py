#!/usr/bin/env python3
"""Re-runs every input libFuzzer saved (crash-*, timeout-*, oom-*, leak-*) and
says where it fails: inside libhdf5 (which function, reached through which
libhdf5 API call from which line of gradscope) or in gradscope's own Swift code.

Usage: python3 triage.py [--binary PATH] ARTIFACTS_DIR_OR_FILE...
A directory contributes the inputs libFuzzer saved in it; a file is taken as
it is (any HDF5 image, e.g. a damaged file from a test). Prints one
tab-separated line per input, then one line per distinct cause.
"""
import collections
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FRAME = re.compile(r"^\s*#(\d+) 0x[0-9a-f]+ (?:in (\S+))? ?(\S*?)? ?(?:\((\S+?)(\+0x[0-9a-f]+)\))?(?: \(BuildId: [0-9a-f]+\))?\s*$")
# Sanitizer interceptors (memcpy, free, ...) report the frame below them as the culprit.
INTERCEPTOR = "compiler-rt/lib/"
# Frames of the signal handler libFuzzer's timeout report runs in.
HANDLER = re.compile(r"^(libc\+0x|__sanitizer_|fuzzer::)")


def demangle(names):
    if not names:
        return {}
    try:
        out = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(names),
                             capture_output=True, text=True, timeout=60).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(zip(names, out)) if len(out) == len(names) else {}


def frames(log, every_stack=False):
    """The first stack in a sanitizer or libFuzzer report (with every_stack,
    all of them: an RSS out-of-memory report lists the largest live heap
    allocations, the first of which is usually libFuzzer's own)."""
    result = []
    for line in log.splitlines():
        match = FRAME.match(line)
        if not match:
            if result and not line.strip() and not every_stack:
                break
            continue
        number, function, location, module, offset = match.groups()
        if int(number) == 0 and result and not every_stack:
            break  # a second stack (e.g. the allocation site): keep the first
        if not function:  # a static function of a library without symbols
            function = os.path.basename(module or "?").split(".so")[0] + (offset or "")
        if INTERCEPTOR in (location or "") or HANDLER.match(function):
            continue
        result.append((function, location or "", module or ""))
    return result


def classify(path, binary):
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "allocator_may_return_null=1:detect_leaks=0:handle_abort=1")
    env["SWIFT_BACKTRACE"] = "enable=no"  # the Swift runtime's crash handler races the sanitizer's
    try:
        run = subprocess.run([binary, "-timeout=10", "-rss_limit_mb=2048", path], capture_output=True,
                             text=True, errors="replace", timeout=120, env=env)
        log = run.stdout + run.stderr
        code = run.returncode
    except subprocess.TimeoutExpired:
        return {"reproduced": "hang (killed after 120 s)", "where": "?", "top": "?", "api": "?", "caller": "?"}
    stack = frames(log, every_stack="out-of-memory (used" in log)
    summary = next((l.strip() for l in log.splitlines() if l.startswith("SUMMARY:")), "")
    fatal = next((l.strip() for l in log.splitlines() if "Fatal error:" in l), "")
    if "ERROR: libFuzzer: timeout" in log:
        reproduced = "timeout (> 10 s)"
    elif "out-of-memory" in log:
        reproduced = next((l.split("ERROR: ")[-1].strip() for l in log.splitlines() if "out-of-memory" in l), "out-of-memory")
    elif "buffer overflow detected" in log:
        reproduced = "glibc fortify: buffer overflow detected (abort)"
    elif fatal:
        reproduced = "Swift trap: " + fatal.split("Fatal error:")[-1].strip()
    elif summary:
        reproduced = re.sub(r" \(BuildId: [0-9a-f]+\)| \(/\S+\)", "", summary.replace("SUMMARY: ", ""))
    elif code == 0:
        reproduced = "does not reproduce"
    else:
        reproduced = f"exit {code}"
    names = demangle([f for f, _, _ in stack if f.startswith("$s")])
    def label(frame):
        function, location, module = frame
        return names.get(function, function) + (f" {location}" if location else "")
    hdf5 = [i for i, f in enumerate(stack) if "libhdf5" in f[2]]
    # gradscope's own code: its Sources/, not this harness (Tools/fuzz/Sources/).
    ours = [i for i, f in enumerate(stack) if "/Sources/" in f[1] and "/Tools/fuzz/" not in f[1]]
    top = label(stack[0]) if stack else "?"
    named = [i for i in hdf5 if not stack[i][0].startswith("libhdf5")]
    if hdf5 and (not ours or hdf5[0] < ours[0]):
        # Inside libhdf5: its first function with a name (static ones have none).
        top = label(stack[named[0]]) if named and (not ours or named[0] < ours[0]) else label(stack[hdf5[0]])
    # The libhdf5 API function gradscope called: the last libhdf5 frame before gradscope's first.
    api = "-"
    if hdf5:
        before = [i for i in hdf5 if not ours or i < ours[0]]
        api = label(stack[before[-1]]) if before else "-"
    caller = label(stack[ours[0]]) if ours else "-"
    if hdf5 and (not ours or hdf5[0] < ours[0]):
        where = "libhdf5"
    elif reproduced == "does not reproduce":
        where = "?"
    elif ours or fatal:
        where = "gradscope"
    elif any("/Tools/fuzz/" in f[1] for f in stack):
        where = "harness"
    else:
        where = "other: " + (stack[0][2] if stack else "?")
    return {"reproduced": reproduced, "where": where, "top": top, "api": api, "caller": caller}


def main():
    arguments = sys.argv[1:]
    binary = os.path.join(HERE, ".build", "release", "gradscope-fuzz")
    if arguments[:1] == ["--binary"] and len(arguments) >= 2:
        binary, arguments = arguments[1], arguments[2:]
    if not arguments:
        print(__doc__, file=sys.stderr)
        return 2
    inputs = []
    for argument in arguments:
        if os.path.isdir(argument):
            inputs += sorted(os.path.join(argument, f) for f in os.listdir(argument)
                             if re.match(r"(crash|timeout|oom|leak|slow-unit)-", f))
        else:
            inputs.append(argument)
    causes = collections.Counter()
    print("input\tbytes\tlibFuzzer\treproduced\twhere\ttop frame\tlibhdf5 call\tgradscope caller")
    for path in inputs:
        name = os.path.basename(path)
        result = classify(path, binary)
        kind = name.split("-")[0] if re.match(r"(crash|timeout|oom|leak|slow-unit)-", name) else "-"
        print("\t".join([name, str(os.path.getsize(path)), kind, result["reproduced"], result["where"],
                         result["top"], result["api"], result["caller"]]), flush=True)
        if result["reproduced"] != "does not reproduce":
            causes[(result["where"], re.sub(r" \(.*| in .*| on .*", "", result["reproduced"]),
                    result["top"].split(" ")[0], result["api"].split(" ")[0])] += 1
    print()
    print("count\twhere\twhat\ttop frame\tlibhdf5 call")
    for (where, what, top, api), count in causes.most_common():
        print(f"{count}\t{where}\t{what}\t{top}\t{api}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
