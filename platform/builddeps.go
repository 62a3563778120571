package platform

import "slices"

// BuildDeps is what building and testing CPython needs on a platform beyond
// its base image: git, a C toolchain, pkg-config, the headers of every
// optional module (ssl, ctypes, zlib, bz2, lzma, sqlite3, readline,
// curses, dbm, uuid, tkinter, zstd, ...) and what the test suite needs of
// the system. The BuildDeps script (package scripts) installs it when
// image.cpython_build_deps is true, the default.
//
// Every name must exist in the release: the script checks them all first
// and fails naming each one the release lacks, so a list that cannot be
// installed fails the bake rather than leaving a worker that cannot build.
// A release that lacks a name gets its own list (see aptBuildDeps).
type BuildDeps struct {
	// Source says where the list comes from: the section and tab of the
	// CPython devguide ("Install dependencies" in getting-started/
	// setup-building.rst), or what stands in for it where the devguide
	// has none, and every departure from it.
	Source string
	// BuildDepOf is a source package whose build dependencies the package
	// manager installs before Packages ("python3": dnf builddep python3, as
	// the devguide does on the dnf family); "" for none.
	BuildDepOf string
	// Packages are installed with the platform's package manager
	// (Homebrew's formulas on macOS), by their exact names in the release.
	Packages []string
	// Installers are programs installed outside a package manager
	// (Windows: Git for Windows, the Visual Studio Build Tools), each
	// checked before it runs.
	Installers []Installer
}

// Installer is a program installed unattended from its publisher's
// download: the file is checked (its SHA-256 when the release is pinned,
// else its Authenticode signature by Signer) before it runs with Args.
type Installer struct {
	// Name names it for people and in errors: "Git for Windows".
	Name string
	// URL is where it is downloaded from.
	URL string
	// SHA256 pins the file; "" when the publisher's file changes under a
	// fixed URL (the Visual Studio bootstrapper), where Signer alone is
	// checked.
	SHA256 string
	// Signer is the subject's organisation (O=) of the Authenticode
	// certificate the file must carry, with a valid signature.
	Signer string
	// Args are the installer's arguments for an unattended install.
	Args []string
	// Installed is a PowerShell expression that is true once it is
	// installed: checked before (an installed one is skipped) and after
	// the install.
	Installed string
}

// packages returns the names the package manager installs, nil without a
// list.
func (b *BuildDeps) packages() []string {
	if b == nil {
		return nil
	}
	return slices.Clone(b.Packages)
}

// BuildDepsPackages returns the package names of p's CPython build
// dependencies (a copy), nil when p has none.
func (p *Platform) BuildDepsPackages() []string { return p.BuildDeps.packages() }

// The CPython devguide ("Install dependencies", getting-started/
// setup-building.rst; read at python/devguide 0d5fbc0, 2026-08-22) gives,
// on its Linux > Debian / Ubuntu tab, `apt-get build-dep python3` with
// deb-src enabled, or the explicit list "to build all optional modules":
//
//	build-essential gdb lcov pkg-config libbz2-dev libffi-dev libgdbm-dev
//	libgdbm-compat-dev liblzma-dev libncurses5-dev libreadline6-dev
//	libsqlite3-dev libssl-dev lzma lzma-dev tk-dev uuid-dev zlib1g-dev
//	libmpdec-dev libzstd-dev inetutils-inetd
//
// aptBuildDeps is that list with these changes:
//   - git first: the devguide's "Get the source code" section takes it as
//     installed, and every build of the fleet starts with a checkout;
//   - libncurses-dev and libreadline-dev, the current names
//     (libncurses5-dev is a transitional package, libreadline6-dev is gone);
//   - netbase instead of inetutils-inetd: the devguide added
//     inetutils-inetd for containers whose test runs lacked
//     /etc/services and /etc/protocols (test_socket and test_asyncio fail
//     with "Servname not supported for ai_socktype"); netbase is the
//     package that has them, and a worker wants no inetd;
//   - without is what the release lacks (checked with apt-cache policy
//     against its archive): libmpdec-dev in Debian 12 and Ubuntu 24.04 (the
//     devguide says so; CPython then builds its bundled copy), lzma-dev in
//     Debian 13.
func aptBuildDeps(without ...string) *BuildDeps {
	all := []string{
		"git", "build-essential", "gdb", "lcov", "pkg-config",
		"libbz2-dev", "libffi-dev", "libgdbm-dev", "libgdbm-compat-dev", "liblzma-dev",
		"libncurses-dev", "libreadline-dev", "libsqlite3-dev", "libssl-dev",
		"lzma", "lzma-dev", "tk-dev", "uuid-dev", "zlib1g-dev", "libmpdec-dev", "libzstd-dev",
		"netbase",
	}
	src := "the CPython devguide, \"Install dependencies\", Linux > Debian / Ubuntu (its list to build all optional modules), " +
		"with git, the current names libncurses-dev and libreadline-dev, and netbase (/etc/services and /etc/protocols, which " +
		"test_socket and test_asyncio need) for inetutils-inetd"
	if len(without) > 0 {
		src += "; without what this release lacks: "
		for i, w := range without {
			if i > 0 {
				src += ", "
			}
			src += w
		}
	}
	return &BuildDeps{
		Source:   src,
		Packages: slices.DeleteFunc(all, func(p string) bool { return slices.Contains(without, p) }),
	}
}

// The devguide's Linux > Fedora / RHEL / CentOS tab: `dnf install git
// pkg-config`, `dnf install dnf-plugins-core`, `dnf builddep python3`, then
// "some optional development dependencies": gcc gcc-c++ gdb lzma
// glibc-devel libstdc++-devel openssl-devel readline-devel zlib-devel
// libzstd-devel libffi-devel bzip2-devel xz-devel sqlite sqlite-devel
// sqlite-libs libuuid-devel gdbm-libs perf expat expat-devel mpdecimal
// python3-pip.
//
// dnfBuildDeps runs dnf builddep python3 (its source repository enabled by
// dnf builddep itself) and then an explicit list that stands alone, so
// that a release whose source repositories cannot be reached still gets
// every optional module: git, pkgconf-pkg-config, the toolchain, and the
// -devel package of each module (gdbm-devel, ncurses-devel, tk-devel, which
// builddep brings on Fedora, are named). The devguide's names that are no
// headers (lzma, sqlite, sqlite-libs, gdbm-libs, perf, expat, python3-pip)
// come with the -devel packages or are not needed to build; mpdecimal-devel,
// libb2-devel and lcov are added where the release has them (Fedora; lcov
// from EPEL). /etc/services is in the setup package, on every RPM system.
func dnfBuildDeps(extra ...string) *BuildDeps {
	pkgs := []string{
		"git", "gcc", "gcc-c++", "make", "pkgconf-pkg-config", "gdb",
		"bzip2-devel", "libffi-devel", "gdbm-devel", "xz-devel", "ncurses-devel",
		"readline-devel", "sqlite-devel", "openssl-devel", "tk-devel", "libuuid-devel",
		"zlib-devel", "expat-devel", "libzstd-devel",
	}
	return &BuildDeps{
		Source: "the CPython devguide, \"Install dependencies\", Linux > Fedora / RHEL / CentOS: dnf builddep python3, " +
			"then git, pkg-config, the toolchain and the -devel package of every optional module by name",
		BuildDepOf: "python3",
		Packages:   append(pkgs, extra...),
	}
}

// freebsdBuildDeps: the devguide has no FreeBSD tab. The list follows
// what FreeBSD's own port of CPython (ports lang/python313: USES ncurses
// pkgconfig readline ssl, LIB_DEPENDS libffi, the LIBMPDEC option's
// math/mpdecimal, TEST_DEPENDS devel/gdb) and the ports of the modules it
// leaves out (_sqlite3, _tkinter, _gdbm: databases/py-sqlite3,
// x11-toolkits/py-tkinter, databases/py-gdbm) build against. The base
// system has the rest: the C compiler (clang), make, zlib, bzip2, xz
// (liblzma), OpenSSL, ncurses, libedit, uuid and /etc/services.
var freebsdBuildDeps = &BuildDeps{
	Source: "no devguide tab for FreeBSD: what FreeBSD's port of CPython (lang/python313) and its ports of _sqlite3, _tkinter and " +
		"_gdbm build against; the base system has clang, make, zlib, bzip2, liblzma, OpenSSL, ncurses, uuid and /etc/services",
	Packages: []string{"git", "pkgconf", "gmake", "gdb", "libffi", "readline", "mpdecimal", "sqlite3", "gdbm", "tk86", "zstd", "libb2"},
}

// openbsdBuildDeps: the devguide has no OpenBSD tab. The list follows what
// OpenBSD's ports of CPython (lang/python/3: libffi, sqlite3, gdbm, tk,
// bzip2, xz, mpdecimal, zstd) build against; the base system has the C
// compiler, make, zlib, OpenSSL (LibreSSL), ncurses, readline, uuid and
// /etc/services. tk and gdbm are the ports' tkinter and gdbm subpackages'
// dependencies.
var openbsdBuildDeps = &BuildDeps{
	Source: "no devguide tab for OpenBSD: what OpenBSD's ports of CPython (lang/python/3) build against; the base system has " +
		"the compiler, make, zlib, LibreSSL, ncurses, readline and /etc/services",
	Packages: []string{"git", "gmake", "libffi", "sqlite3", "gdbm", "tk%8.6", "bzip2", "xz", "mpdecimal", "zstd"},
}

// macosBuildDeps: the devguide's macOS tab: the Xcode command line tools
// (`xcode-select --install`; AWS's macOS AMIs include them, the script
// installs them unattended with softwareupdate when missing) and, for
// Homebrew (also in AWS's AMIs), `brew bundle --file=Misc/Brewfile`, whose
// macOS formulas are gdbm, mpdecimal, openssl@3.0, pkg-config, tcl-tk@8,
// xz and zstd (CPython's Misc/Brewfile). git comes with the command line
// tools. Formulas install as the Homebrew prefix's owner, never as root.
var macosBuildDeps = &BuildDeps{
	Source: "the CPython devguide, \"Install dependencies\", macOS > Homebrew: the Xcode command line tools (with git) and " +
		"the macOS formulas of CPython's Misc/Brewfile",
	Packages: []string{"gdbm", "mpdecimal", "openssl@3.0", "pkg-config", "tcl-tk@8", "xz", "zstd"},
}

// windowsBuildDeps: the devguide's "Windows" compiling section (Visual
// Studio 2017 or later with the C++ tools; Git for Windows, also for the
// checkout, which Visual Studio needs native) and its "Install
// dependencies" Windows tab ("extensions are already included and built
// automatically": PCbuild\get_externals.bat fetches them). Unattended: the
// Visual Studio 2022 Build Tools with the C++ build tools workload and its
// recommended components (the MSVC v143 compiler, the Windows SDK), and
// Git for Windows.
var windowsBuildDeps = &BuildDeps{
	Source: "the CPython devguide, \"Compile and build\" > Windows and \"Install dependencies\" > Windows: Visual Studio's C++ " +
		"build tools (the 2022 Build Tools, workload VCTools with its recommended components: MSVC v143, the Windows SDK) " +
		"and Git for Windows; PCbuild fetches the optional modules' sources itself",
	Installers: []Installer{
		{
			// Pinned: Git for Windows 2.51.2, whose SHA-256 two independent
			// public projects that pin this installer record alike (the
			// release page lists it).
			Name:      "Git for Windows",
			URL:       "https://github.com/git-for-windows/git/releases/download/v2.51.2.windows.1/Git-2.51.2-64-bit.exe",
			SHA256:    "ebd318e1d3ee0cc1ac8ead026f1edf8678dcb42c7d74d757b8e2fa8a1be0b25f",
			Signer:    "Johannes Schindelin",
			Args:      []string{"/VERYSILENT", "/NORESTART", "/NOCANCEL", "/SP-", "/SUPPRESSMSGBOXES"},
			Installed: `Test-Path "$env:ProgramFiles\Git\cmd\git.exe"`,
		},
		{
			// The bootstrapper of the current Visual Studio 2022 Build
			// Tools: Microsoft replaces the file under this URL with each
			// release, so its signature is what is checked.
			Name:   "Visual Studio 2022 Build Tools (C++)",
			URL:    "https://aka.ms/vs/17/release/vs_buildtools.exe",
			Signer: "Microsoft Corporation",
			Args: []string{"--quiet", "--wait", "--norestart", "--nocache",
				"--add", "Microsoft.VisualStudio.Workload.VCTools", "--includeRecommended"},
			// vswhere comes with the installer; -and stops before it when
			// it is not there.
			Installed: `(Test-Path "${env:ProgramFiles(x86)}\Microsoft Visual Studio\Installer\vswhere.exe") -and ` +
				`[bool](& "${env:ProgramFiles(x86)}\Microsoft Visual Studio\Installer\vswhere.exe" -products * ` +
				`-requires Microsoft.VisualStudio.Component.VC.Tools.x86.x64 -property installationPath)`,
		},
	},
}

// The devguide has no tab for Alpine, Arch or NixOS. Their lists are the
// components of its Debian / Ubuntu list ("to build all optional
// modules", with git and /etc/services as aptBuildDeps takes them) under
// each distribution's names: the toolchain, git, gdb, lcov, pkg-config,
// and the library and headers of bz2, ctypes (libffi), dbm (gdbm), lzma
// (xz), curses, readline, sqlite3, ssl, tkinter, uuid, zlib, decimal
// (mpdecimal), zstd and pyexpat (expat).

// alpineBuildDeps: Alpine's names (build-base is its toolchain, headers
// are in the -dev packages, linux-headers are the kernel's; uuid is
// util-linux's, /etc/services is alpine-baselayout's, in the base image).
var alpineBuildDeps = &BuildDeps{
	Source: "no devguide tab for Alpine: the components of its Debian / Ubuntu list (to build all optional modules, with git) " +
		"under Alpine's names: build-base and linux-headers for the toolchain, each module's -dev package",
	Packages: []string{
		"git", "build-base", "linux-headers", "gdb", "lcov", "pkgconf",
		"bzip2-dev", "libffi-dev", "gdbm-dev", "xz-dev", "ncurses-dev",
		"readline-dev", "sqlite-dev", "openssl-dev", "tk-dev", "util-linux-dev",
		"zlib-dev", "mpdecimal-dev", "zstd-dev", "expat-dev",
	},
}

// archBuildDeps: Arch's names (base-devel is its toolchain; a library's
// package holds its headers; util-linux-libs is libuuid; /etc/services is
// iana-etc's, in the base system).
var archBuildDeps = &BuildDeps{
	Source: "no devguide tab for Arch: the components of its Debian / Ubuntu list (to build all optional modules, with git) " +
		"under Arch's names: base-devel for the toolchain, each module's library package (headers included)",
	Packages: []string{
		"git", "base-devel", "gdb", "lcov", "pkgconf",
		"bzip2", "libffi", "gdbm", "xz", "ncurses", "readline", "sqlite",
		"openssl", "tk", "util-linux-libs", "zlib", "mpdecimal", "zstd", "expat",
	},
}

// nixosBuildDeps: nixpkgs' attribute names, which the nix fragment adds to
// environment.systemPackages with their dev outputs, headers and pkg-config
// files linked into the system profile (/etc/services is NixOS's own).
var nixosBuildDeps = &BuildDeps{
	Source: "no devguide tab for NixOS: the components of its Debian / Ubuntu list (to build all optional modules, with git) " +
		"as nixpkgs attributes, added to the system's packages with their dev outputs (headers and pkg-config files)",
	Packages: []string{
		"git", "gcc", "gnumake", "gdb", "lcov", "pkg-config",
		"bzip2", "libffi", "gdbm", "xz", "ncurses", "readline", "sqlite",
		"openssl", "tk", "libuuid", "zlib", "mpdecimal", "zstd", "expat",
	},
}
