# --- The CPython builder (lab/master/cpython.py, inserted by lab/master) ---
# A factory shaped like the fleet's UnixBuild (python/buildmaster-config,
# master/custom/factories.py), written for the lab: a git checkout of the
# lab's CPython repository, ./configure --with-pydebug, make, make
# pythoninfo, and a short test run of tests that touch the optional
# modules and the system (test_socket, test_asyncio), through
# `make buildbottest` as the fleet runs it.
#
# Parallelism comes from the worker, as the fleet's does from its worker
# declarations (CPythonWorker(..., parallel_tests=N)): make -jN and the
# tests' -jN when the worker's parallel_tests is set, else make without -j
# and the tests with -j2 (the fleet's get_j_opts). Here a worker carries
# it as the property parallel_tests, so that one builder serves every
# worker of the lab.
#
# The build fails when an optional module was not built: make runs
# CPython's own check (Tools/build/check_extension_modules.py), strict when
# PYTHONSTRICTEXTENSIONBUILD is set, so a module whose headers are missing
# ("The necessary bits to build these optional modules were not found")
# or that fails to import fails the compile step; then every module the
# issue names is imported, so the log shows each of them.

from buildbot.plugins import steps, util

# Imported by the "optional-modules" step: each needs headers the
# platform's build dependencies bring (ssl: libssl, ctypes: libffi, ...).
CPYTHON_MODULES = [
    "ssl", "ctypes", "zlib", "bz2", "lzma", "sqlite3", "readline", "curses",
    "dbm.gnu", "dbm.ndbm", "uuid", "tkinter", "_decimal", "hashlib", "_ctypes_test",
]


# What the worker's image must have to build (the build dependencies):
# printed into the build's log, and the step fails on the first missing
# one. tk.h is found through pkg-config (Debian keeps it under tcl8.6/).
CPYTHON_TOOLCHAIN = r"""set -e
git --version
gcc --version | head -n 1
make --version | head -n 1
echo "pkg-config $(pkg-config --version)"
for h in openssl/ssl.h ffi.h zlib.h bzlib.h lzma.h sqlite3.h readline/readline.h ncurses.h gdbm.h uuid/uuid.h; do
    printf '#include <%s>\n' "$h" | gcc -E -x c - >/dev/null
    echo "header $h"
done
printf '#include <tk.h>\n' | gcc $(pkg-config --cflags tk) -E -x c - >/dev/null
echo "header tk.h ($(pkg-config --modversion tk))"
getent services http || { echo "no http in /etc/services (netbase)"; exit 1; }
"""

# The fleet's per-file timeout (TEST_TIMEOUT), and its step timeout.
CPYTHON_TEST_TIMEOUT = 20 * 60


def _parallel_tests(props):
    n = props.getProperty("parallel_tests")
    return int(n) if n else None


@util.renderer
def _cpython_compile(props):
    n = _parallel_tests(props)
    return ["make"] + ([f"-j{n}"] if n else []) + ["all"]


def _cpython_test(tests):
    @util.renderer
    def command(props):
        n = _parallel_tests(props) or 2
        # The lab reaches no internet: no network or urlfetch resources; no
        # cpu or largefile ones either, on small lab machines.
        testopts = ["-uall,-network,-urlfetch,-cpu,-largefile", f"-j{n}", *tests]
        return [
            "make", "buildbottest",
            "TESTOPTS=" + " ".join(testopts),
            f"TESTTIMEOUT={CPYTHON_TEST_TIMEOUT}",
        ]
    return command


class CPythonLabBuild(util.BuildFactory):
    """tests: the short test run's tests (regrtest names)."""

    def __init__(self, repourl, branch, tests):
        super().__init__()
        self.addStep(steps.Git(
            repourl=repourl, branch=branch, mode="full", method="fresh",
            timeout=3600, haltOnFailure=True))
        self.addStep(steps.ShellCommand(
            name="build-dependencies", haltOnFailure=True,
            command=["sh", "-c", CPYTHON_TOOLCHAIN]))
        self.addStep(steps.Configure(
            command=["./configure", "--prefix", "$(PWD)/target", "--with-pydebug"]))
        self.addStep(steps.Compile(
            command=_cpython_compile, env={"PYTHONSTRICTEXTENSIONBUILD": "1"}))
        self.addStep(steps.ShellCommand(
            name="optional-modules", haltOnFailure=True,
            command=["./python", "-c", "import " + ", ".join(CPYTHON_MODULES) + "; print('imported:', "
                     + repr(" ".join(CPYTHON_MODULES)) + ")"]))
        self.addStep(steps.ShellCommand(
            name="pythoninfo", command=["make", "pythoninfo"],
            env={"BUILDBOT": "1"}, warnOnFailure=True, flunkOnFailure=False))
        self.addStep(steps.Test(
            command=_cpython_test(tests), env={"BUILDBOT": "1"},
            timeout=CPYTHON_TEST_TIMEOUT + 10 * 60))
        self.addStep(steps.ShellCommand(
            name="clean", command=["make", "distclean"], alwaysRun=True,
            flunkOnFailure=False, warnOnFailure=True))
# --- end of the CPython builder ---
