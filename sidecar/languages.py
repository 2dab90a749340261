"""The language table: the one place that says how each language is built and run.

Each entry holds the source file name, the compile and run command lines (argv
templates, never a shell), the version probe and the language's environment.
Both the executor (to run code) and the API (aliases, availability, versions) read
it, so it is standard library only.

Templates: ``{src}`` source path, ``{build}`` build directory, ``{main}`` the entry
point's name (Java's main class), ``{memory_mb}`` the sandbox memory limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["LANGUAGES", "Language", "java_layout", "resolve_language"]


@dataclass(frozen=True)
class Language:
    """How one language is compiled, run and probed for its version."""

    code: str
    name: str
    aliases: tuple[str, ...]
    source_name: str
    run: tuple[str, ...]
    version_probe: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: The executor starts the interpreter and imports libraries before the claim.
    warm_interpreter: bool = False

    @property
    def toolchain(self) -> str:
        """The command whose presence decides whether the language is available."""
        return (self.compile or self.run)[0]


_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto", "-Xss8m")

LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language(
            code="py",
            name="Python",
            aliases=("python", "python3", "py3"),
            source_name="main.py",
            run=("python3", "{src}"),
            version_probe=("python3", "-c", "import platform; print(platform.python_version())"),
            env={"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
                 "MPLCONFIGDIR": "/tmp/.matplotlib"},
            warm_interpreter=True,
        ),
        Language(
            code="js",
            name="JavaScript",
            aliases=("javascript", "node", "nodejs"),
            source_name="main.js",
            run=("node", "{src}"),
            version_probe=("node", "--version"),
        ),
        Language(
            code="ts",
            name="TypeScript",
            aliases=("typescript",),
            source_name="main.ts",
            compile=("tsc", "--target", "es2020", "--module", "commonjs", "--lib", "es2020,dom",
                     "--types", "node", "--typeRoots", "/usr/local/lib/node_modules/@types",
                     "--skipLibCheck", "--outDir", "{build}", "{src}"),
            run=("node", "{build}/main.js"),
            version_probe=("tsc", "--version"),
        ),
        Language(
            code="c",
            name="C",
            aliases=("gcc",),
            source_name="main.c",
            compile=("gcc", "-O2", "-std=gnu17", "-pipe", "-o", "{build}/main", "{src}", "-lm"),
            run=("{build}/main",),
            version_probe=("gcc", "-dumpfullversion"),
        ),
        Language(
            code="cpp",
            name="C++",
            aliases=("c++", "g++", "cplusplus"),
            source_name="main.cpp",
            compile=("g++", "-O2", "-std=gnu++17", "-pipe", "-o", "{build}/main", "{src}", "-lm"),
            run=("{build}/main",),
            version_probe=("g++", "-dumpfullversion"),
        ),
        Language(
            code="java",
            name="Java",
            aliases=("jdk",),
            source_name="Main.java",
            compile=("javac", *(f"-J{flag}" for flag in _JVM_FLAGS), "-encoding", "UTF-8",
                     "-d", "{build}", "{src}"),
            run=("java", *_JVM_FLAGS, "-XX:MaxRAM={memory_mb}m", "-XX:MaxRAMPercentage=60",
                 "-cp", "{build}", "{main}"),
            version_probe=("javac", "-version"),
        ),
        Language(
            code="php",
            name="PHP",
            aliases=("php8",),
            source_name="main.php",
            run=("php", "{src}"),
            version_probe=("php", "-r", "echo PHP_VERSION;"),
        ),
        Language(
            code="rs",
            name="Rust",
            aliases=("rust", "rustc"),
            source_name="main.rs",
            compile=("rustc", "--edition", "2021", "-C", "opt-level=1", "-o", "{build}/main",
                     "{src}"),
            run=("{build}/main",),
            version_probe=("rustc", "--version"),
        ),
        Language(
            code="go",
            name="Go",
            aliases=("golang",),
            source_name="main.go",
            compile=("go", "build", "-o", "{build}/main", "{src}"),
            run=("{build}/main",),
            version_probe=("go", "env", "GOVERSION"),
            env={"GOCACHE": "/tmp/.cache/go-build", "GOPATH": "/tmp/go", "GO111MODULE": "auto",
                 "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"},
        ),
        Language(
            code="d",
            name="D",
            aliases=("dlang", "gdc"),
            source_name="main.d",
            compile=("gdc", "-O1", "-pipe", "-o", "{build}/main", "{src}"),
            run=("{build}/main",),
            version_probe=("gdc", "-dumpfullversion"),
        ),
        Language(
            code="f90",
            name="Fortran",
            aliases=("fortran", "gfortran", "f95", "f03"),
            source_name="main.f90",
            compile=("gfortran", "-O2", "-pipe", "-o", "{build}/main", "{src}"),
            run=("{build}/main",),
            version_probe=("gfortran", "-dumpfullversion"),
        ),
        Language(
            code="r",
            name="R",
            aliases=("rlang", "rscript"),
            source_name="main.R",
            run=("Rscript", "--no-save", "--no-restore", "{src}"),
            version_probe=("Rscript", "-e", "cat(as.character(getRversion()))"),
        ),
        Language(
            code="bash",
            name="Bash",
            aliases=("sh", "shell"),
            source_name="main.sh",
            run=("bash", "{src}"),
            version_probe=("bash", "-c", "echo ${BASH_VERSION%%(*}"),
        ),
    )
}

_ALIASES: dict[str, str] = {
    name: lang.code for lang in LANGUAGES.values() for name in (lang.code, *lang.aliases)
}


def resolve_language(name: str) -> Language | None:
    """The language for a code or alias, case-insensitive; None when unknown."""
    code = _ALIASES.get(name.strip().lower())
    return LANGUAGES[code] if code else None


# Java: the file must be named after its public top-level class, and the class to
# run is the one declaring main. Comments and strings are blanked first so that a
# "class" inside them is not taken for a declaration.
_JAVA_NOISE = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
_JAVA_CLASS = re.compile(r"\b(?:class|interface|enum|record)\s+([A-Za-z_$][\w$]*)")
_JAVA_PUBLIC = re.compile(r"\bpublic\s+(?:(?:final|abstract|strictfp)\s+)*"
                          r"(?:class|interface|enum|record)\s+([A-Za-z_$][\w$]*)")
_JAVA_MAIN = re.compile(r"\bstatic\s+(?:public\s+)?void\s+main\s*\(|"
                        r"\bpublic\s+static\s+void\s+main\s*\(")


def java_layout(code: str) -> tuple[str, str]:
    """(source file name, main class) for a Java program, whatever its class names."""
    clean = _JAVA_NOISE.sub(lambda m: " " * len(m.group(0)), code)
    public = _JAVA_PUBLIC.search(clean)
    main_at = _JAVA_MAIN.search(clean)
    main_class = _enclosing_class(clean, main_at.start()) if main_at else None
    if main_class is None:
        main_class = public.group(1) if public else "Main"
    source = f"{public.group(1)}.java" if public else f"{main_class}.java"
    return source, main_class


def _enclosing_class(clean: str, position: int) -> str | None:
    """The innermost class whose body contains ``position`` (nested classes allowed)."""
    best: tuple[int, str] | None = None
    for match in _JAVA_CLASS.finditer(clean, 0, position):
        body_start = clean.find("{", match.end())
        if body_start == -1 or body_start > position:
            continue
        depth, index = 0, body_start
        while index < len(clean):
            depth += {"{": 1, "}": -1}.get(clean[index], 0)
            if depth == 0:
                break
            index += 1
        if body_start < position < index and (best is None or body_start > best[0]):
            best = (body_start, match.group(1))
    return best[1] if best else None
