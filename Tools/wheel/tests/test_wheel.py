"""The wheel as a user meets it: built once by Tools/wheel/build.sh, installed into a fresh virtual
environment, then used from an environment with no Swift toolchain and no LD_LIBRARY_PATH
(`env -i`, PATH only the environment's bin, /usr/bin and /bin): the `gradscope` command, the
Python API, the exporters, `ldd` of the installed binary, and the example notebook run headless.

The release build is the slow part (minutes): it happens once per test session. GRADSCOPE_WHEEL
names a wheel built earlier to test instead; SWIFT_SCRATCH_PATH is passed on to build.sh.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SAMPLES = os.path.join(ROOT, "SampleCheckpoints")
GLIBC = {"linux-vdso.so.1", "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
         "libresolv.so.2", "libutil.so.1", "libnsl.so.1", "libanl.so.1"}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    given = os.environ.get("GRADSCOPE_WHEEL")
    if given:
        return given
    out = tmp_path_factory.mktemp("wheel-dist")
    started = time.monotonic()
    subprocess.run([os.path.join(ROOT, "Tools", "wheel", "build.sh"), str(out)], cwd=ROOT, check=True)
    sys.stderr.write(f"\nwheel built in {time.monotonic() - started:.0f} s\n")
    wheels = glob.glob(str(out / "gradscope-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory):
    """A fresh virtual environment with the wheel installed (and its dependencies, numpy and h5py)."""
    base = tmp_path_factory.mktemp("user")
    path = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + [wheel], check=True)
    home = base / "home"
    home.mkdir()
    return {"path": str(path), "home": str(home), "pip": pip}


def user_env(venv):
    """The environment `env -i` leaves, plus PATH and HOME: no toolchain, no LD_LIBRARY_PATH."""
    return {"PATH": f"{venv['path']}/bin:/usr/bin:/bin", "HOME": venv["home"]}


def run_clean(venv, *command, cwd=ROOT):
    environment = [f"{key}={value}" for key, value in user_env(venv).items()]
    return subprocess.run(["env", "-i", *environment, *command], cwd=cwd, capture_output=True, text=True)


def installed_binary(venv):
    found = glob.glob(os.path.join(venv["path"], "lib", "python*", "site-packages", "gradscope", "bin", "gradscope"))
    assert len(found) == 1, found
    return found[0]


def test_wheel_is_tagged_with_this_machines_glibc(wheel):
    major, minor = os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[:2]
    assert os.path.basename(wheel).endswith(f"-py3-none-manylinux_{major}_{minor}_x86_64.whl")


def test_no_toolchain_in_the_clean_environment(venv):
    swift = shutil.which("swift")
    result = run_clean(venv, "sh", "-c", 'command -v swift; echo "LD=${LD_LIBRARY_PATH-unset}"; command -v gradscope')
    lines = result.stdout.splitlines()
    assert "LD=unset" in lines
    assert lines[-1] == os.path.join(venv["path"], "bin", "gradscope")
    if swift is not None:  # the toolchain this test process sees is not on the clean PATH
        assert os.path.realpath(swift) not in [os.path.realpath(line) for line in lines if line.startswith("/")]


def test_console_script_scans_a_sample_run(venv):
    table = run_clean(venv, "gradscope", "scan", "SampleCheckpoints/ctr-plateau")
    assert table.returncode == 0, table.stderr
    assert "2 problems: layer `emb.0` poorly initialised" in table.stdout
    assert "WARNING loss-plateau [steps 0–4000]" in table.stdout

    as_json = run_clean(venv, "gradscope", "scan", "SampleCheckpoints/frozen-layer", "--format", "json", "-q")
    assert as_json.returncode == 0, as_json.stderr
    findings = json.loads(as_json.stdout)["findings"]
    assert {(f["kind"], f["tensor"]) for f in findings} == {("frozen", "net.2.weight"), ("frozen", "net.2.bias")}

    failing = run_clean(venv, "gradscope", "scan", "SampleCheckpoints/frozen-layer", "--fail-on", "warning", "-q")
    assert failing.returncode == 1

    # Several worker processes (the scan's isolation re-runs the binary): the gzip run read by them.
    exploding = run_clean(venv, "gradscope", "scan", "SampleCheckpoints/exploding-nan", "--jobs", "2", "--format",
                          "json", "-q")
    assert exploding.returncode in (0, 1), exploding.stderr
    kinds = {f["kind"] for f in json.loads(exploding.stdout)["findings"]}
    assert {"exploding-gradient", "nan-inf"} <= kinds

    module = run_clean(venv, "python", "-m", "gradscope", "--version")
    assert (module.returncode, module.stdout.strip()) == (0, "0.1.0")

    missing = run_clean(venv, "gradscope", "scan", "no-such-run")
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr.strip().splitlines() == ["gradscope: no-such-run: no such file or directory"]


API_SCRIPT = r"""
import json, sys
import gradscope

run = gradscope.scan("SampleCheckpoints/ctr-plateau")
frozen = gradscope.scan("SampleCheckpoints/frozen-layer", fail_on="warning", jobs=2)
one = gradscope.inspect("SampleCheckpoints/frozen-layer/step_000050.h5")
change = gradscope.diff("SampleCheckpoints/frozen-layer/step_000050.h5", "SampleCheckpoints/frozen-layer/step_000600.h5")
try:
    gradscope.scan("no-such-run")
    error = None
except gradscope.GradscopeError as caught:
    error = {"message": caught.message, "exit_code": caught.exit_code}
try:
    gradscope.scan("SampleCheckpoints/ctr-plateau", threshold={"no_such_threshold": 1})
    threshold_error = None
except gradscope.GradscopeError as caught:
    threshold_error = caught.message
html = run._repr_html_()
print(json.dumps({
    "verdict": run.verdict,
    "findings": [[f.kind, f.severity, f.tensor, list(f.steps), sorted(f.evidence)] for f in run.findings],
    "finding_type": type(run.findings[0]).__name__,
    "plateau_ln_k": run.findings_of("loss-plateau")[0].evidence["ln_k"],
    "failed": [run.failed, frozen.failed],
    "frozen": sorted(f.tensor for f in frozen.findings),
    "not_checked": [[n.kind, n.reason] for n in one.not_checked],
    "skipped": run.skipped,
    "timeline_type": type(run.timeline).__name__,
    "timeline_rows": len(run.timeline),
    "timeline_first": run.timeline[0],
    "json_same": json.loads(run.to_json()) == run.data,
    "inspect_tensors": len(one.tensors),
    "diff_first": change.tensors[0]["name"],
    "diff_findings": sorted({f.kind for f in change.findings}),
    "error": error,
    "threshold_error": threshold_error,
    "html_head": html[:60],
    "html_has_report": "gradscope report: SampleCheckpoints/ctr-plateau" in html,
    "html_unescaped_tags": html.count("<"),
    "version": gradscope.version(),
}))
"""


def test_python_api(venv):
    result = run_clean(venv, "python", "-c", API_SCRIPT)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["verdict"].startswith("2 problems: layer `emb.0` poorly initialised")
    assert out["finding_type"] == "Finding"
    assert ["loss-plateau", "warning", None, [0, 4000]] == out["findings"][0][:4]
    assert "ln_k" in out["findings"][0][4]
    assert abs(out["plateau_ln_k"] - 0.693147) < 1e-6
    assert {tuple(f[:3]) for f in out["findings"][1:]} == {
        ("poor-init", "warning", "emb.0.weight"),
        ("poor-init", "warning", "emb.1.weight"),
        ("poor-init", "warning", "emb.2.weight"),
    }
    assert out["failed"] == [False, True]  # warnings: not an error, but at or above fail_on="warning"
    assert out["frozen"] == ["net.2.bias", "net.2.weight"]
    assert ["frozen", "needs several saved steps: use gradscope scan on the run"] in out["not_checked"]
    assert out["skipped"] == []
    # No pandas in this environment: the timeline is plain records, one per tensor and save.
    assert out["timeline_type"] == "list"
    assert out["timeline_rows"] > 13
    assert out["timeline_first"]["tensor"] == "emb.0.weight" and out["timeline_first"]["step"] == 0
    assert out["json_same"]
    assert out["inspect_tensors"] == 21
    assert out["diff_findings"] == ["frozen"]
    assert out["error"] == {"message": "no-such-run: no such file or directory", "exit_code": 2}
    assert out["threshold_error"].startswith("--threshold no_such_threshold=1: unknown threshold")
    # The report is a whole page: in a sandboxed iframe, every tag of it escaped into srcdoc.
    assert out["html_head"].startswith('<iframe class="gradscope-report" sandbox=""')
    assert out["html_has_report"]
    assert out["html_unescaped_tags"] == 2  # <iframe ...> and </iframe>
    assert out["version"] == "0.1.0"


def test_exporters_in_the_wheel(venv, tmp_path):
    script = r"""
import sys
import numpy as np
import gradscope, gradscope_export
rng = np.random.default_rng(0)
still = rng.normal(0, 0.1, (8, 16)).astype("float32")
for step in range(0, 60, 10):
    moving = rng.normal(0, 0.1, (16, 4)).astype("float32")
    gradscope_export.save_step(f"{sys.argv[1]}/step_{step:06d}.h5", step,
                               weights={"fc1.weight": moving, "fc2.weight": still},
                               gradients=None if step == 0 else {"fc1.weight": moving * 0.01, "fc2.weight": still * 0.01},
                               loss=1.0 / (step + 1), lr=1e-3, framework="numpy", optimizer_name="SGD")
run = gradscope.scan(sys.argv[1])
print(run.layout, sorted({(f.kind, f.tensor) for f in run.findings}))
"""
    result = run_clean(venv, "python", "-c", script, str(tmp_path))
    assert result.returncode == 0, result.stderr
    layout, _, findings = result.stdout.strip().partition(" ")
    assert layout == "native"
    # fc2 never changes while fc1 moves and fc2's gradient is not zero: frozen.
    assert "('frozen', 'fc2.weight')" in findings


def test_installed_binary_loads_nothing_from_the_toolchain(venv):
    binary = installed_binary(venv)
    result = run_clean(venv, "ldd", binary)
    assert result.returncode == 0, result.stderr
    libs = os.path.realpath(os.path.join(os.path.dirname(binary), "..", ".libs"))
    swift = shutil.which("swift")
    toolchain = os.path.dirname(os.path.dirname(os.path.realpath(swift))) if swift else None
    bundled = 0
    for line in result.stdout.splitlines():
        line = line.strip()
        assert "not found" not in line, line
        assert "swift" not in line.lower() and "Foundation" not in line, line
        if toolchain:
            assert toolchain not in line, line
        if "=>" not in line:
            continue
        name, _, rest = line.partition("=>")
        resolved = os.path.realpath(rest.strip().split(" (")[0])
        if name.strip() in GLIBC:
            continue
        assert resolved.startswith(libs + os.sep), line  # libhdf5, libcurl, libstdc++ ...: from the wheel
        bundled += 1
    assert bundled >= 3
    assert any("libhdf5" in name for name in os.listdir(libs))


def test_runs_where_only_glibc_is_installed(venv, tmp_path):
    """In a mount namespace whose system library directory holds glibc's libraries alone (as a bare
    machine would, without libhdf5, libcurl, libstdc++ or the Swift runtime), the installed binary
    still reads a gzip-compressed run through libhdf5 in its worker processes, and writes a report."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to hide the system's libraries")
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine allows no mount namespace (unshare -m)")
    binary = installed_binary(venv)
    glibc_dirs = set()
    only_glibc = tmp_path / "glibc"
    only_glibc.mkdir()
    for line in subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        path = parts[2] if len(parts) > 2 and parts[1] == "=>" else parts[0]
        name = os.path.basename(path)
        if name in GLIBC - {"linux-vdso.so.1"} or name.startswith("ld-linux"):
            glibc_dirs.add(os.path.dirname(os.path.realpath(path)))
            shutil.copyfile(os.path.realpath(path), only_glibc / name)
            (only_glibc / name).chmod(0o755)
    assert len(glibc_dirs) == 1, glibc_dirs  # a merged /usr: /lib and /lib64 lead there too
    hidden = glibc_dirs.pop()
    script = (
        f'mount --bind {only_glibc} {hidden} && ! ls {hidden}/libhdf5* 2>/dev/null '
        f'&& exec env -i PATH=/usr/bin:/bin {binary} scan SampleCheckpoints/exploding-nan --jobs 2 --format json -q'
    )
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr  # 1: error findings (NaN), at the default --fail-on
    kinds = {finding["kind"] for finding in json.loads(result.stdout)["findings"]}
    assert {"exploding-gradient", "nan-inf"} <= kinds
    script = f"mount --bind {only_glibc} {hidden} && exec {binary} report SampleCheckpoints/ctr-plateau -o - -q"
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("<!DOCTYPE html>") and "loss-plateau" in result.stdout


def test_notebook_shows_the_report(venv, tmp_path, monkeypatch):
    import nbclient  # in .venv: Tools/python-env.sh, ensure_test_tools
    import nbformat

    # The kernel is the user's: ipykernel (and pandas, so the timeline is a DataFrame) in the fresh environment.
    subprocess.run(venv["pip"] + ["ipykernel", "pandas"], check=True)
    kernels = tmp_path / "jupyter" / "kernels" / "gradscope-user"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [os.path.join(venv["path"], "bin", "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "gradscope user environment",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    notebook_dir = os.path.join(ROOT, "Tools", "wheel")
    notebook = nbformat.read(os.path.join(notebook_dir, "example.ipynb"), as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name="gradscope-user", timeout=300,
                                     resources={"metadata": {"path": notebook_dir}})
    client.execute(env=user_env(venv))  # the kernel runs with PATH and HOME only, as under env -i

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "2 problems: layer `emb.0` poorly initialised" in text
    assert "warning loss-plateau None (0, 4000)" in text
    html = [output.data["text/html"] for output in outputs if "text/html" in output.get("data", {})]
    assert any("<table" in page and "update_ratio" in page for page in html)  # the timeline as a DataFrame
    report = [page for page in html if page.startswith('<iframe class="gradscope-report"')]
    assert len(report) == 1
    assert "gradscope report: ../../SampleCheckpoints/ctr-plateau" in report[0]
    assert "loss-plateau" in report[0] and "&lt;svg" in report[0]
