"""The Docker image's build inputs, checked without a Docker daemon.

`docker build .` sends the build context (the folder, less what .dockerignore leaves out) to the daemon
before the first step runs: a local .venv (1.5 GB here) or ltx2-output/ would be sent whole on every
build. This module computes the context as Docker does and checks that it holds no venv, output, cache or
.git, and that every file the Dockerfile copies is in it.

The matcher follows Docker's own (github.com/moby/patternmatcher, used by both the classic builder and
BuildKit): each line is trimmed and cleaned (filepath.Clean, a leading "/" dropped); "#" starts a comment;
"*" and "?" stop at "/", "**" spans folders, "[...]" is a class and "\\" escapes; a pattern that matches a
folder leaves out all below it; "!" lets a path back in; the last pattern that matches a path decides.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REGEX_SPECIAL = set(".+()|{}$")  # moby escapes these: they mean nothing in filepath.Match


def go_clean(path: str) -> str:
    """Go's filepath.Clean on a slash path (normpath, except that Go leaves no leading "//")."""
    path = posixpath.normpath(path)
    return "/" + path.lstrip("/") if path.startswith("//") else path


def compile_pattern(pattern: str):
    """moby/patternmatcher's Pattern.compile and Pattern.match: a cleaned pattern as a test of a path.
    A pattern without wildcards is compared as text, "x/**" and "**/x" as a prefix and a suffix, the rest
    as an anchored regexp."""
    out, kind, i, n = "^", "exact", 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*" and pattern[i + 1:i + 2] == "*":
            start = i
            i += 2
            if pattern[i:i + 1] == "/":  # "**/" is "**"
                i += 1
            if i >= n:  # a trailing "**" takes everything below
                if kind == "exact":
                    kind = "prefix"
                else:
                    out, kind = out + ".*", "regexp"
            else:  # any number of folders, none included
                out, kind = out + "(.*/)?", "regexp"
            if start == 0:
                kind = "suffix"
            continue
        if ch == "*":
            out, kind = out + "[^/]*", "regexp"
        elif ch == "?":
            out, kind = out + "[^/]", "regexp"
        elif ch in REGEX_SPECIAL:
            out += "\\" + ch
        elif ch == "\\":  # escapes the next character; a trailing one stands for itself
            if i + 1 < n:
                i += 1
                out, kind = out + "\\" + pattern[i], "regexp"
            else:
                out += "\\\\"
        elif ch in "[]":
            out, kind = out + ch, "regexp"
        else:
            out += ch
        i += 1
    if kind == "exact":
        return lambda path: path == pattern
    if kind == "prefix":
        return lambda path: path.startswith(pattern[:-2])
    if kind == "suffix":
        suffix = pattern[2:]
        return lambda path: path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
    regex = re.compile(out + "$", re.DOTALL)
    return lambda path: regex.match(path) is not None


class DockerIgnore:
    def __init__(self, text: str):
        self.patterns: list[tuple[str, bool, object]] = []  # (pattern, lets back in, its test)
        for number, line in enumerate(text.split("\n")):
            if number == 0:
                line = line.removeprefix("\ufeff")
            if line.startswith("#"):  # a comment only where the line starts with it, before trimming
                continue
            line = line.strip()
            if not line:
                continue
            back_in = line.startswith("!")
            if back_in:
                line = line[1:].strip()
            if line:
                line = go_clean(line)
                if len(line) > 1 and line.startswith("/"):
                    line = line[1:]
            self.patterns.append((line, back_in, compile_pattern(line)))

    def excluded(self, path: str) -> bool:
        """moby's MatchesOrParentMatches for a slash-separated path relative to the context."""
        matched = False
        parent = posixpath.dirname(path)
        folders = parent.split("/") if parent else []
        for _, back_in, test in self.patterns:
            if back_in != matched:  # only a pattern that could change the answer is tried
                continue
            hit = test(path) or any(test("/".join(folders[:k + 1])) for k in range(len(folders)))
            if hit:
                matched = not back_in
        return matched

    def may_let_back_in(self, folder: str) -> bool:
        """Whether a "!" pattern could match something below `folder` (else a left-out folder is skipped
        whole, as Docker skips it)."""
        for text, back_in, _ in self.patterns:
            if not back_in:
                continue
            literal = re.split(r"[*?\[\\]", text, maxsplit=1)[0]
            if literal == text:
                if text == folder or text.startswith(folder + "/") or folder.startswith(text + "/"):
                    return True
            elif (folder + "/").startswith(literal) or literal.startswith(folder + "/"):
                return True
        return False


def build_context(root: Path, prune: bool = True) -> set[str]:
    """The files `docker build root` sends (Dockerfile and .dockerignore aside: the builder reads those
    whatever .dockerignore says). `prune`: skip a left-out folder whole, as Docker does."""
    ignore_file = root / ".dockerignore"
    ignore = DockerIgnore(ignore_file.read_text(encoding="utf-8") if ignore_file.exists() else "")
    files = set()
    for folder, dirs, names in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        rel = "" if rel == "." else rel + "/"
        if prune:
            dirs[:] = [d for d in dirs if not ignore.excluded(rel + d) or ignore.may_let_back_in(rel + d)]
        files |= {rel + name for name in names if not ignore.excluded(rel + name)}
    return files


def dockerfile_sources(text: str) -> list[str]:
    """The context paths of every COPY and ADD (not `--from` another stage or image)."""
    text = re.sub(r"\\\n", " ", text)  # line continuations
    sources = []
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if len(words) < 2 or words[0].upper() not in ("COPY", "ADD"):
            continue
        rest = words[1].strip()
        flags = []
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        if any(flag.startswith("--from") for flag in flags):
            continue
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        sources += args[:-1]
    return sources


# --- the matcher: Docker's documented examples and moby's rules ---------------------------------------

# moby/patternmatcher's own TestMatches cases (pattern, path, left out), run through this matcher.
MOBY_CASES = [
    ("**", "file", True), ("**", "file/", True), ("**/", "file", True), ("**/", "file/", True), ("**", "/", True),
    ("**/", "/", True), ("**", "dir/file", True), ("**/", "dir/file", True), ("**", "dir/file/", True),
    ("**/", "dir/file/", True), ("**/**", "dir/file", True), ("**/**", "dir/file/", True),
    ("dir/**", "dir/file", True), ("dir/**", "dir/file/", True), ("dir/**", "dir/dir2/file", True),
    ("dir/**", "dir/dir2/file/", True), ("**/dir", "dir", True), ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True), ("**/dir2/*", "dir/dir2/file/", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True), ("**/dir2/**", "dir/dir2/dir3/file/", True),
    ("**file", "file", True), ("**file", "dir/file", True), ("**/file", "dir/file", True),
    ("**file", "dir/dir/file", True), ("**/file", "dir/dir/file", True), ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True), ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True), ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True), ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True), ("**/**/*.txt", "file.txt", True), ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True), ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False), ("a/*.txt", "a/file.txt", True), ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False), ("a[b-d]e", "ace", True), ("a[b-d]e", "aae", False), ("a[^b-d]e", "aze", True),
    (".*", ".foo", True), (".*", "foo", False), ("abc.def", "abcdef", False), ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False), ("abc?def", "abcZdef", True), ("abc?def", "abcdef", False),
    ("a\\\\", "a\\", True), ("**/foo/bar", "foo/bar", True), ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True), ("abc/**", "abc", False), ("abc/**", "abc/def", True),
    ("abc/**", "abc/def/ghi", True), ("**/.foo", ".foo", True), ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True), ("a(b)c/def", "a(b)c/xyz", False), ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True), ("a\\*b", "a*b", True),
    ("**\n!util/docker/web", "util/docker/web/foo", False),
    ("**\n!util/docker/web\nutil/docker/web/foo", "util/docker/web/foo", True),
    ("**\n!dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
]


@pytest.mark.parametrize("patterns, path, left_out", MOBY_CASES)
def test_mobys_own_cases(patterns, path, left_out):
    assert DockerIgnore(patterns).excluded(path) is left_out


def test_dockers_documented_examples():
    # docs.docker.com, "Build context" > ".dockerignore files".
    ignore = DockerIgnore("# comment\n*/temp*\n*/*/temp*\ntemp?\n")
    for path in ("somedir/temporary.txt", "somedir/temp", "somedir/temp/inside", "somedir/subdir/temporary.txt",
                 "tempa", "tempb"):
        assert ignore.excluded(path), path
    for path in ("temporary.txt", "temp", "tempab", "a/b/c/temp", "# comment"):
        assert not ignore.excluded(path), path
    assert DockerIgnore("**/*.go").excluded("main.go") and DockerIgnore("**/*.go").excluded("a/b/c.go")
    # Markdown left out except README files, but README-secret.md: the last matching line decides.
    ignore = DockerIgnore("*.md\n!README*.md\nREADME-secret.md\n")
    assert [ignore.excluded(p) for p in ("a.md", "README.md", "README-x.md", "README-secret.md")] == \
        [True, False, False, True]
    ignore = DockerIgnore("*.md\nREADME-secret.md\n!README*.md\n")
    assert [ignore.excluded(p) for p in ("a.md", "README.md", "README-secret.md")] == [True, False, False]


def test_moby_pattern_rules():
    assert DockerIgnore("/build/").excluded("build/x")  # cleaned: leading and trailing "/" go
    assert DockerIgnore("./a/../b").excluded("b")
    assert DockerIgnore("*").excluded("deep/down/file")  # the folder "deep" matches
    assert not DockerIgnore("*.py").excluded("pkg/a.py")  # "*" stops at "/"
    assert DockerIgnore("**/__pycache__").excluded("__pycache__/a.pyc")  # "**/" may be no folder at all
    assert DockerIgnore("**/__pycache__").excluded("a/b/__pycache__/c.pyc")
    assert DockerIgnore("a/**").excluded("a/b/c") and not DockerIgnore("a/**").excluded("ab")
    assert DockerIgnore("f[0-9].txt").excluded("f7.txt") and not DockerIgnore("f[0-9].txt").excluded("fx.txt")
    assert DockerIgnore("f[^0-9].txt").excluded("fx.txt")
    assert DockerIgnore(r"a\*b").excluded("a*b") and not DockerIgnore(r"a\*b").excluded("axb")
    assert DockerIgnore("a.b").excluded("a.b") and not DockerIgnore("a.b").excluded("axb")  # "." is literal
    assert DockerIgnore("\ufeff.venv").excluded(".venv/x")  # a byte-order mark is not part of the pattern
    assert DockerIgnore("  #x").excluded("#x")  # "#" makes a comment in the first column only
    back = DockerIgnore("*\n!keep\n**/*.pyc\n")
    assert [back.excluded(p) for p in ("other", "other/x", "keep", "keep/x.py", "keep/x.pyc")] == \
        [True, True, False, False, True]


def test_the_dockerfile_parser_reads_copy_and_add():
    text = ('FROM x AS build\nCOPY a b ./\ncopy --chown=1:1 c /d\nCOPY ["e f", "g"]\n'
            "COPY --from=build /x /y\nADD h \\\n    i /j\nRUN echo COPY k l\n")
    assert dockerfile_sources(text) == ["a", "b", "c", "e f", "h", "i"]


# --- this repository's context ------------------------------------------------------------------------

LOCAL_ONLY = [  # what a working copy grows that an image must never get
    ".venv/lib/python3.12/site-packages/torch/__init__.py", "venv/bin/python", ".git/HEAD", ".git/objects/ab/cd",
    "ltx2-output/2026/job.mp4", "ltx2-output/job.json", "outputs/a.webm", "out.mp4", "clip.mov",
    "ltx2/__pycache__/cli.cpython-312.pyc", "ltx2/serving/__pycache__/app.cpython-312.pyc", "ltx2/stray.mp4",
    "ltx2.egg-info/PKG-INFO", ".pytest_cache/v/cache/nodeids", ".hypothesis/examples/x", ".ruff_cache/x",
    ".mutate/x", "build/lib/ltx2/cli.py", "dist/ltx2-0.1.0.whl", "tests/test_x.py", "bench/attacks.py",
    "tools/x.py", ".ci/run", "my-notes/draft.txt", ".env", "models/ltx-2.safetensors",
]


@pytest.fixture(scope="module")
def sources():
    return dockerfile_sources((ROOT / "Dockerfile").read_text())


def test_every_dockerfile_source_is_in_the_context_and_nothing_local(tmp_path, sources):
    """A copy of the repository's tracked files plus everything a working copy grows (a venv, outputs,
    caches, .git): the context is exactly the Dockerfile's sources, whole, and none of the rest."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True,
                             text=True).stdout.split("\0")
    tracked = [p for p in tracked if p and (ROOT / p).is_file() and p != ".dockerignore"]
    (tmp_path / ".dockerignore").write_bytes((ROOT / ".dockerignore").read_bytes())  # as it is here, committed or not
    for rel in tracked + LOCAL_ONLY:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((ROOT / rel).read_bytes() if rel in tracked else b"local")
    context = build_context(tmp_path)

    wanted = {p for p in tracked for s in sources if p == s or p.startswith(s.rstrip("/") + "/")}
    assert sources and all(any(p == s or p.startswith(s + "/") for p in wanted) for s in sources), sources
    assert "ltx2/serving/static/playground.js" in wanted and "ltx2/models/ltx2_19b_config.json" in wanted
    assert context == wanted, (sorted(context - wanted), sorted(wanted - context))
    assert context == build_context(tmp_path, prune=False)  # skipping left-out folders changes nothing


def test_the_working_copy_sends_no_venv_output_or_git(sources):
    """This checkout as it is (a .venv, ltx2-output/, caches where tests ran): everything git ignores is
    left out, and the context is a few MB, not the venv's GBs."""
    context = build_context(ROOT)
    for prefix in (".venv/", "venv/", "ltx2-output/", ".git/", "ltx2.egg-info/"):
        assert not any(p.startswith(prefix) for p in context), prefix
    assert not any("__pycache__/" in p or p.endswith((".pyc", ".mp4")) for p in context)
    ignored = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory",
                              "-z"], cwd=ROOT, capture_output=True, check=True, text=True).stdout.split("\0")
    ignore = DockerIgnore((ROOT / ".dockerignore").read_text())
    leaked = [p for p in ignored if p and not ignore.excluded(p.rstrip("/"))]
    assert not leaked, leaked
    size = sum((ROOT / p).stat().st_size for p in context)
    assert size < 8 * 2**20, size
    for source in sources:  # present here too, so `docker build .` from this checkout works
        assert any(p == source or p.startswith(source + "/") for p in context), source
