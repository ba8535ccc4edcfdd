"""Pages loaded in a real headless browser (Debian's chromium, installed by bin/setup) with no route to the web.

Every browser test goes through here, so each loads its page the same way: a fresh profile, no background
traffic, and a proxy that does not exist, so any fetch of a script, style, image or font from the web fails.
Without chromium the test fails, naming the command that installs it; it never passes silently.
Importable from any test module (tests/ is on pytest's pythonpath).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def chromium(url: str, tmp_path: Path, *extra: str, loopback: bool = True) -> subprocess.CompletedProcess:
    """Run headless chromium on ``url`` with ``extra`` switches (``--dump-dom``, ``--screenshot=...``).

    ``loopback=False`` sends 127.0.0.1 through the dead proxy too, for a file page that must reach nothing at all.
    """
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("chromium is not installed: bin/setup installs Debian's (bin/install-debs chromium:chromium)")
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--proxy-server=127.0.0.1:9",  # nothing listens there: a fetch through it fails at once
            *([] if loopback else ["--proxy-bypass-list=<-loopback>"]),
            f"--user-data-dir={tmp_path / 'chromium-profile'}", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)


def chromium_dom(url: str, tmp_path: Path, *, loopback: bool = True) -> str:
    """The DOM after load (scripts run), as chromium serialises it."""
    return chromium(url, tmp_path, "--dump-dom", loopback=loopback).stdout
