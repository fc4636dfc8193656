"""What each Docker image really holds, checked without Docker (no base image can be pulled here).

For every Dockerfile: its ``COPY`` lines are laid out in an empty folder exactly as Docker
would lay them in ``WORKDIR``, its own ``protoc`` command generates the protos there, and a
fresh interpreter that sees only that folder and the virtualenv's third-party packages (not
the repository, not the editable install's finder) imports every module of the service.
Each other service's package must then be missing. Separately, the ``pip install`` line must
install the service's extra from pyproject.toml, and every third-party module the shipped
code imports must be declared by the core dependencies or the extras that line installs.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Slow: each image's files laid out and its imports and protoc run (make test-fast leaves it out).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = PurePosixPath("/app")
SERVICE_PACKAGES = ("embed_server", "scraper_service", "search_gateway")


@dataclass(frozen=True, slots=True)
class Image:
    dockerfile: str
    package: str  # what `python -m <package>` runs in the image
    extra: str  # the pyproject.toml extra that holds the service's dependencies


IMAGES = [
    Image("embed-server.Dockerfile", "embed_server", "embed"),
    Image("scraper.Dockerfile", "scraper_service", "scraper"),
    Image("gateway.Dockerfile", "search_gateway", "gateway"),
]


def _instructions(dockerfile: Path) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    logical = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines even inside a continuation
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""
    assert not logical, f"{dockerfile.name} ends inside a continuation"


def _copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context; ``--from`` stages are not ours."""
    found = []
    for keyword, rest in _instructions(dockerfile):
        if keyword == "WORKDIR":
            assert PurePosixPath(rest) == WORKDIR, f"{dockerfile.name}: this test lays files out for WORKDIR {WORKDIR}"
        if keyword not in ("COPY", "ADD"):
            continue
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        paths = [a for a in args if not a.startswith("--")]
        found.append((paths[:-1], paths[-1]))
    return found


def _lay_out(dockerfile: Path, into: Path) -> None:
    """Copy the build context's files as Docker's COPY would: a folder's contents, a file by name."""
    for sources, destination in _copies(dockerfile):
        target_dir = PurePosixPath(destination)
        if target_dir.is_absolute():
            target_dir = target_dir.relative_to(WORKDIR)
        into_dir = destination.endswith("/") or destination in (".", "./") or len(sources) > 1
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"{dockerfile.name}: COPY {source}: not in the build context"
            target = into / target_dir
            if path.is_dir():
                shutil.copytree(path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                if into_dir:
                    target = target / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


def _run_lines(dockerfile: Path) -> list[str]:
    return [rest for keyword, rest in _instructions(dockerfile) if keyword == "RUN"]


def _generate_protos(dockerfile: Path, root: Path) -> None:
    """Run the Dockerfile's own protoc command in the laid-out folder (with this interpreter)."""
    commands = [
        step.strip()
        for run in _run_lines(dockerfile)
        for step in run.split("&&")
        if "grpc_tools.protoc" in step
    ]
    assert len(commands) == 1, f"{dockerfile.name}: expected one protoc step, found {commands}"
    command = re.sub(r"^python3?\b", shlex.quote(sys.executable), commands[0])
    done = subprocess.run(["bash", "-c", command], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{dockerfile.name}: protoc failed: {done.stderr}"


def _pip_installs(dockerfile: Path) -> list[list[str]]:
    """The arguments of each `pip install` step (options dropped)."""
    found = []
    for run in _run_lines(dockerfile):
        for step in run.split("&&"):
            words = shlex.split(step)
            if words[:2] == ["pip", "install"] or words[1:4] == ["-m", "pip", "install"]:
                start = words.index("install") + 1
                found.append(words[start:])
    return found


# The check that runs in the bare interpreter: argv = root, package, report, other packages...
# It prints nothing of its own; a module that crashes the interpreter leaves no report.
_IMPORT_EVERYTHING = r"""
import importlib, importlib.util, json, pkgutil, sys, traceback
root, package, report, site_dirs, others = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5:]
sys.path[:0] = [root]  # `python -m` puts the working directory first
sys.path.extend(site_dirs)
result = {"path": sys.path, "failed": {}, "imported": [], "present": {}}

def fail(name, exc=None):
    result["failed"][name] = traceback.format_exc(limit=-3) if exc is None else repr(exc)

for other in others:
    try:
        importlib.import_module(other)
        result["present"][other] = getattr(sys.modules[other], "__file__", None) or str(sys.modules[other].__path__)
    except ModuleNotFoundError as exc:
        if exc.name != other:  # found, then failed on something it imports: still shipped
            result["present"][other] = repr(exc)
    except BaseException as exc:
        result["present"][other] = repr(exc)
try:
    top = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(top.__path__, package + ".", onerror=fail)]
except BaseException:
    fail(package)
    names = []
for name in names:
    try:
        importlib.import_module(name)
        result["imported"].append(name)
    except BaseException:
        fail(name)
for i, script in enumerate(sorted(__import__("pathlib").Path(root, "docker").glob("*.py"))):
    try:
        spec = importlib.util.spec_from_file_location(f"_image_script_{i}", script)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))  # guarded by __main__
        result["imported"].append(str(script.relative_to(root)))
    except BaseException:
        fail(str(script.relative_to(root)))
with open(report, "w") as out:
    json.dump(result, out)
"""


def _third_party_dirs() -> list[str]:
    """The virtualenv's site-packages, reached without `site`: its .pth hooks (the editable
    install's finder, which would serve the whole checkout) never run."""
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


@pytest.fixture(scope="module", params=IMAGES, ids=lambda image: image.dockerfile.split(".")[0])
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Image, Path]:
    spec: Image = request.param
    root = tmp_path_factory.mktemp(spec.package) / "app"
    root.mkdir()
    dockerfile = ROOT / "docker" / spec.dockerfile
    _lay_out(dockerfile, root)
    _generate_protos(dockerfile, root)
    return spec, root


def test_image_imports_every_module_of_its_service_and_no_other_service(image: tuple[Image, Path], tmp_path: Path) -> None:
    spec, root = image
    assert (root / spec.package / "__main__.py").is_file(), f"{spec.dockerfile} does not COPY {spec.package}"
    others = [p for p in SERVICE_PACKAGES if p != spec.package]
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _IMPORT_EVERYTHING, str(root), spec.package, str(report),
         json.dumps(_third_party_dirs()), *others],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0 and report.is_file(), f"the import check itself died: {done.stderr[-3000:]}"
    result = json.loads(report.read_text())
    # The isolation is what makes this test mean anything: prove the checkout is out of reach.
    assert not any(Path(p).resolve() == ROOT for p in result["path"] if p), result["path"]
    assert result["present"] == {}, f"{spec.dockerfile}: another service's package is importable: {result['present']}"
    assert result["failed"] == {}, f"{spec.dockerfile}: modules that do not import in the image:\n" + "\n".join(
        f"{name}: {why}" for name, why in result["failed"].items()
    )
    assert f"{spec.package}.__main__" in result["imported"]
    assert "docker/healthcheck.py" in result["imported"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _declared(extras: set[str]) -> dict[str, Requirement]:
    project = _pyproject()["project"]
    lines = list(project["dependencies"])
    for extra in sorted(extras):
        lines += project["optional-dependencies"][extra]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def _installed_extras(spec: Image) -> set[str]:
    """The extras of the project's own `pip install ".[...]"` line in the Dockerfile."""
    extras: set[str] = set()
    for args in _pip_installs(ROOT / "docker" / spec.dockerfile):
        for arg in args:
            if match := re.fullmatch(r"\.\[([\w,\s-]+)\]", arg):
                extras |= {e.strip() for e in match.group(1).split(",")}
    return extras


@pytest.mark.parametrize("spec", IMAGES, ids=lambda image: image.dockerfile.split(".")[0])
def test_image_installs_the_project_with_its_service_extra_and_no_list_of_its_own(spec: Image) -> None:
    extras = _installed_extras(spec)
    assert spec.extra in extras, f"{spec.dockerfile} must `pip install \".[{spec.extra},...]\"`, installs extras {extras}"
    assert extras <= set(_pyproject()["project"]["optional-dependencies"]), extras
    declared = _declared(extras)
    for args in _pip_installs(ROOT / "docker" / spec.dockerfile):
        for arg in args:
            assert not arg.startswith("-"), f"{spec.dockerfile}: pip option {arg} (e.g. --no-deps skips the extra)"
            if arg.startswith(".") or arg == "grpcio-tools":  # the project; protoc, uninstalled after use
                continue
            # Anything else is a pin installed first; it must be one the extras already allow.
            pin = Requirement(arg)
            name = canonicalize_name(pin.name)
            assert name in declared, f"{spec.dockerfile}: installs {arg}, which pyproject.toml does not declare"
            version = next(iter(pin.specifier)).version if len(pin.specifier) == 1 else None
            assert version and declared[name].specifier.contains(version), (
                f"{spec.dockerfile}: pins {arg}, outside pyproject.toml's {declared[name]}"
            )


# onnxruntime-gpu ships the same `onnxruntime` module as the CPU build installed here.
_SAME_MODULE = {"onnxruntime-gpu": "onnxruntime"}


def _imported_top_levels(root: Path) -> dict[str, str]:
    """Top-level module -> first file importing it, over every .py file the image holds."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        if path.parts[len(root.parts)] == "tattoo_search":
            continue  # generated: imports only protobuf and grpc, which the core declares
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(root)))
    return found


def test_every_third_party_import_in_the_image_is_declared_for_it(image: tuple[Image, Path]) -> None:
    spec, root = image
    shipped = {p.name for p in root.iterdir() if p.is_dir()}
    declared = {_SAME_MODULE.get(name, name) for name in _declared(_installed_extras(spec))}
    providers = importlib.metadata.packages_distributions()
    missing = []
    for module, where in sorted(_imported_top_levels(root).items()):
        if module in sys.stdlib_module_names or module == "__future__" or module in shipped:
            continue
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & declared:
            missing.append(f"{module} (from {where}; provided by {sorted(dists) or 'nothing installed here'})")
    assert not missing, f"{spec.dockerfile}: imported but not declared for its extras: {missing}"
