"""The language table: aliases, Java's file and class names."""

from __future__ import annotations

import pytest

from sidecar.languages import LANGUAGES, java_layout, resolve_language


def test_thirteen_languages() -> None:
    assert sorted(LANGUAGES) == sorted(
        ["py", "js", "ts", "c", "cpp", "java", "php", "rs", "go", "d", "f90", "r", "bash"])


@pytest.mark.parametrize("alias,code", [("PYTHON", "py"), (" python3 ", "py"), ("Node", "js"),
                                        ("typescript", "ts"), ("c++", "cpp"), ("golang", "go"),
                                        ("fortran", "f90"), ("sh", "bash"), ("rust", "rs")])
def test_aliases(alias: str, code: str) -> None:
    language = resolve_language(alias)
    assert language is not None and language.code == code


def test_unknown_language() -> None:
    assert resolve_language("cobol") is None


@pytest.mark.parametrize("source,expected", [
    ("public class Foo { public static void main(String[] a) {} }", ("Foo.java", "Foo")),
    ("class A {} class B { public static void main(String[] a) {} }", ("B.java", "B")),
    ("public class Outer { static class Inner {} \n public static void main(String[] a){} }",
     ("Outer.java", "Outer")),
    ("// class Fake\npublic final class Real { static public void main(String[] a){"
     " String s = \"class Nope\"; } }", ("Real.java", "Real")),
    ("public class Pub {} class Runner { public static void main(String... a) {} }",
     ("Pub.java", "Runner")),
    ("System.out.println(1);", ("Main.java", "Main")),
])
def test_java_layout(source: str, expected: tuple[str, str]) -> None:
    assert java_layout(source) == expected
