"""Real programs, one per language, written the way people write them.

Each prints ``sum(1..10)=55`` followed by its arguments, one per line.
"""

from __future__ import annotations

SUM_PROGRAMS: dict[str, str] = {
    "py": """
import sys
print(f"sum(1..10)={sum(range(1, 11))}")
for arg in sys.argv[1:]:
    print(arg)
""",
    "js": """
const total = Array.from({length: 10}, (_, i) => i + 1).reduce((a, b) => a + b, 0);
console.log(`sum(1..10)=${total}`);
for (const arg of process.argv.slice(2)) console.log(arg);
""",
    "ts": """
function total(n: number): number {
  let s: number = 0;
  for (let i = 1; i <= n; i++) s += i;
  return s;
}
console.log(`sum(1..10)=${total(10)}`);
const args: string[] = process.argv.slice(2);
args.forEach((a: string) => console.log(a));
""",
    "c": """
#include <stdio.h>
int main(int argc, char **argv) {
    int s = 0;
    for (int i = 1; i <= 10; i++) s += i;
    printf("sum(1..10)=%d\\n", s);
    for (int i = 1; i < argc; i++) puts(argv[i]);
    return 0;
}
""",
    "cpp": """
#include <iostream>
#include <numeric>
#include <vector>
int main(int argc, char** argv) {
    std::vector<int> v(10);
    std::iota(v.begin(), v.end(), 1);
    std::cout << "sum(1..10)=" << std::accumulate(v.begin(), v.end(), 0) << std::endl;
    for (int i = 1; i < argc; ++i) std::cout << argv[i] << "\\n";
}
""",
    "java": """
import java.util.stream.IntStream;

class Helper {
    static int total() { return IntStream.rangeClosed(1, 10).sum(); }
}

public class SumProgram {
    public static void main(String[] args) {
        System.out.println("sum(1..10)=" + Helper.total());
        for (String arg : args) System.out.println(arg);
    }
}
""",
    "php": """<?php
$s = array_sum(range(1, 10));
echo "sum(1..10)=$s\\n";
foreach (array_slice($argv, 1) as $arg) { echo $arg, "\\n"; }
""",
    "rs": """
use std::env;
fn main() {
    let s: i32 = (1..=10).sum();
    println!("sum(1..10)={}", s);
    for arg in env::args().skip(1) {
        println!("{}", arg);
    }
}
""",
    "go": """
package main

import (
\t"fmt"
\t"os"
)

func main() {
\ts := 0
\tfor i := 1; i <= 10; i++ {
\t\ts += i
\t}
\tfmt.Printf("sum(1..10)=%d\\n", s)
\tfor _, a := range os.Args[1:] {
\t\tfmt.Println(a)
\t}
}
""",
    "d": """
import std.stdio;
import std.algorithm : sum;
import std.range : iota;

void main(string[] args) {
    writefln("sum(1..10)=%d", iota(1, 11).sum);
    foreach (arg; args[1 .. $]) writeln(arg);
}
""",
    "f90": """
program sum_program
  implicit none
  integer :: i, s, n
  character(len=256) :: arg
  s = 0
  do i = 1, 10
    s = s + i
  end do
  write(*, '(A,I0)') 'sum(1..10)=', s
  n = command_argument_count()
  do i = 1, n
    call get_command_argument(i, arg)
    write(*, '(A)') trim(arg)
  end do
end program sum_program
""",
    "r": """
args <- commandArgs(trailingOnly = TRUE)
cat(sprintf("sum(1..10)=%d\\n", sum(1:10)))
for (a in args) cat(a, "\\n", sep = "")
""",
    "bash": """
s=0
for i in $(seq 1 10); do s=$((s + i)); done
echo "sum(1..10)=$s"
for arg in "$@"; do echo "$arg"; done
""",
}

# A compile error (or, for interpreted languages, a syntax error) per language.
BROKEN_PROGRAMS: dict[str, str] = {
    "py": "def f(:\n    pass\n",
    "js": "function f( {\n",
    "ts": "let x: number = 'not a number';\nconsole.log(x);\n",
    "c": "int main(void) { return undefined_name; }\n",
    "cpp": "int main() { undefined_call(); }\n",
    "java": "public class Broken { public static void main(String[] a) { int x = \"s\"; } }\n",
    "php": "<?php echo 'x'\n$y = ;\n",
    "rs": "fn main() { let x: i32 = \"s\"; }\n",
    "go": "package main\nfunc main() { undefinedCall() }\n",
    "d": "void main() { undefinedCall(); }\n",
    "f90": "program broken\n  integer :: i\n  i = 'text'\nend program broken\n",
    "r": "f <- function( {\n",
    "bash": "if then fi\n",
}

# An exception (or error exit) at run time, after the program started.
FAILING_PROGRAMS: dict[str, str] = {
    "py": "print('before')\nraise ValueError('boom')\n",
    "js": "console.log('before');\nthrow new Error('boom');\n",
    "java": "public class Fails { public static void main(String[] a) "
            "{ System.out.println(\"before\"); throw new IllegalStateException(\"boom\"); } }\n",
    "c": "#include <stdio.h>\n#include <stdlib.h>\nint main(void) { puts(\"before\"); "
         "fprintf(stderr, \"boom\\n\"); return 3; }\n",
    "rs": "fn main() { println!(\"before\"); panic!(\"boom\"); }\n",
    "bash": "echo before\necho boom >&2\nexit 4\n",
}
