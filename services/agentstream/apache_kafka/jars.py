"""The Apache Kafka jars, fetched once from Maven Central into a cache folder.

The broker is the Maven artifact ``org.apache.kafka:kafka_2.13`` pinned in ``pom.xml``
beside this module; ``mvn dependency:copy-dependencies`` puts it and its runtime
dependencies in ``<cache>/kafka-<version>/libs``. A marker file written last makes a
half-finished copy (a killed ``mvn``) count as missing, and a file lock lets parallel
test sessions share one download.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from agentstream.errors import BrokerUnavailableError
from agentstream.settings import KAFKA_CACHE_ENV, XDG_CACHE_HOME_ENV

_COMPLETE = ".complete"


def pom_text() -> str:
    return resources.files(__package__).joinpath("pom.xml").read_text(encoding="utf-8")


def kafka_version() -> str:
    """The Apache Kafka version pinned in ``pom.xml``."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom_text())
    if match is None:  # pragma: no cover - the pom ships with the package
        raise BrokerUnavailableError("pom.xml of agentstream.apache_kafka names no <kafka.version>.")
    return match.group(1)


def cache_root() -> Path:
    configured = os.environ.get(KAFKA_CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get(XDG_CACHE_HOME_ENV, Path.home() / ".cache")) / "agentstream"


def java_and_maven_present() -> bool:
    return shutil.which("java") is not None and shutil.which("mvn") is not None


def ensure_jars(timeout: float = 900.0) -> Path:
    """The folder of broker jars for the pinned version, fetching them with Maven if needed."""
    home = cache_root() / f"kafka-{kafka_version()}"
    libs = home / "libs"
    if (libs / _COMPLETE).exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching right now
        if not (libs / _COMPLETE).exists():
            _fetch(libs, timeout)
    return libs


def _fetch(libs: Path, timeout: float) -> None:
    mvn = shutil.which("mvn")
    if mvn is None or shutil.which("java") is None:
        raise BrokerUnavailableError(
            "Starting Apache Kafka needs `java` (17+) and `mvn` on PATH: install them "
            "(Debian: apt-get install openjdk-17-jre-headless maven), or set KAFKA_BOOTSTRAP_SERVERS."
        )
    shutil.rmtree(libs, ignore_errors=True)
    with tempfile.TemporaryDirectory() as work:
        Path(work, "pom.xml").write_text(pom_text(), encoding="utf-8")
        command = [mvn, "-B", "-q", "-f", str(Path(work, "pom.xml")), "dependency:copy-dependencies",
                   f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise BrokerUnavailableError(
            f"Fetching Apache Kafka {kafka_version()} with Maven failed (exit {done.returncode}); "
            "check that Maven Central is reachable (proxy settings in ~/.m2/settings.xml):\n" + "\n".join(tail)
        )
    (libs / _COMPLETE).touch()
