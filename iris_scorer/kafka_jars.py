"""Apache Kafka's broker jars from Maven Central, fetched once into a git-ignored cache.

``deploy/kafka/pom.xml`` pins the version (``<kafka.version>``, the one place it is written).
:func:`ensure_jars` runs ``mvn -B -q dependency:copy-dependencies`` into
``.cache/kafka/<version>/lib`` and then writes ``jars.stamp`` (the pom's SHA-256 and the jar
names). Later calls only check the stamp and the files: no Maven, no network. Maven's own
``~/.m2`` cache makes a refetch (new clone, changed pom) a local copy too.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ml.errors import BadInputError, IrisError

REPO_ROOT = Path(__file__).resolve().parents[1]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J2 = REPO_ROOT / "deploy" / "kafka" / "log4j2.xml"
CACHE_ROOT = REPO_ROOT / ".cache" / "kafka"
STAMP = "jars.stamp"
MIN_JAVA = 17
MVN_TIMEOUT_S = 900


class KafkaLocalError(IrisError):
    """The local Kafka cannot be fetched, started or reached."""

    code = "kafka_local_error"


class KafkaPortInUse(BadInputError):
    code = "port_in_use"


def kafka_version(pom: Path = POM) -> str:
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text(encoding="utf-8"))
    if not found:
        raise KafkaLocalError(f"{pom} has no <kafka.version> property.")
    return found.group(1).strip()


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def cached_lib(cache_root: Path = CACHE_ROOT, pom: Path = POM) -> Path | None:
    """The jar folder when a complete fetch for exactly this pom is cached, else None."""
    home = cache_root / kafka_version(pom)
    stamp = home / STAMP
    if not stamp.is_file():
        return None
    digest, *jars = stamp.read_text(encoding="utf-8").split()
    lib = home / "lib"
    if digest != _pom_digest(pom) or not jars or not all((lib / jar).is_file() for jar in jars):
        return None
    return lib


def ensure_jars(cache_root: Path = CACHE_ROOT, pom: Path = POM, *, mvn: str = "mvn") -> Path:
    """The folder of Kafka's jars; Maven runs only when the stamp says they are not cached."""
    lib = cached_lib(cache_root, pom)
    if lib is not None:
        return lib
    version = kafka_version(pom)
    home = cache_root / version
    executable = shutil.which(mvn)
    if executable is None:
        raise KafkaLocalError(
            f"Maven ({mvn}) is not on PATH and Apache Kafka {version} is not cached in {home / 'lib'}: "
            "install Maven (apt-get install maven) or copy that cache from a machine that has it."
        )
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib-", dir=home))  # a half-done fetch never looks done
    argv = [executable, "-B", "-q", "-Dstyle.color=never", "-f", str(pom), "dependency:copy-dependencies"]
    argv.append(f"-DoutputDirectory={staging}")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=MVN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaLocalError(
            f"mvn did not fetch Apache Kafka {version} within {MVN_TIMEOUT_S} s ({pom})."
        ) from exc
    jars = sorted(p.name for p in staging.glob("*.jar"))
    if done.returncode != 0 or not jars:
        shutil.rmtree(staging, ignore_errors=True)
        lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("[ERROR]")] or lines or ["no output"]
        raise KafkaLocalError(
            f"mvn could not fetch Apache Kafka {version} from Maven Central ({pom}, exit "
            f"{done.returncode}): {errors[0]}"
        )
    staging.chmod(0o755)
    shutil.rmtree(home / "lib", ignore_errors=True)
    staging.rename(home / "lib")
    (home / STAMP).write_text("\n".join([_pom_digest(pom), *jars]) + "\n", encoding="utf-8")
    return home / "lib"


def java_major(java: str) -> int:
    """The major version of ``java`` (8 for ``1.8.0_x``), 0 when it cannot be read."""
    shown = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', shown.stderr + shown.stdout)
    if not found:
        return 0
    return int(found.group(2) or 0) if found.group(1) == "1" else int(found.group(1))


def java_executable() -> str:
    """The ``java`` to run (``$JAVA_HOME/bin/java`` first), checked to be Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).is_file():
        where = f"JAVA_HOME={java_home}" if java_home else "PATH"
        raise KafkaLocalError(f"Java {MIN_JAVA}+ is needed to run Kafka and no java was found on {where}.")
    major = java_major(java)
    if major < MIN_JAVA:
        found = f"Java {major}" if major else "a java whose version cannot be read"
        raise KafkaLocalError(
            f"Java {MIN_JAVA}+ is needed to run Kafka 4.x brokers; {java} is {found} (set JAVA_HOME)."
        )
    return java


def local_kafka_unavailable(cache_root: Path = CACHE_ROOT, pom: Path = POM) -> str | None:
    """Why a local Kafka cannot run here (one sentence), or None when Java 17+ and jars can be had."""
    try:
        java_executable()
    except KafkaLocalError as exc:
        return exc.message
    if cached_lib(cache_root, pom) is None and shutil.which("mvn") is None:
        return f"Maven (mvn) is not on PATH and no Kafka jars are cached in {cache_root}"
    return None
