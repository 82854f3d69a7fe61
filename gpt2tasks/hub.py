"""Is the Hugging Face Hub there? Asked once, quickly, so that offline runs fail at once.

Offline, huggingface_hub retries every file with back-off for about a minute before giving up (unless
HF_HUB_OFFLINE=1 is set). One short probe per process answers the question instead: when the Hub does
not answer, the process goes on as with HF_HUB_OFFLINE=1 (models, tokenizers and datasets come from
the local cache, or are refused at once).
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 3.0
_hub_answers: dict[str, bool] = {}  # endpoint -> reachable, probed once per process


def hub_reachable(timeout: float | None = None) -> bool:
    """Whether the Hugging Face Hub answers at all, asked once with a short timeout. Offline,
    huggingface_hub retries each file with back-off for about a minute before giving up; with
    this answer a Hub id is looked up in the local cache only, and fails at once when absent.
    Any HTTP answer counts (proxies from the environment are used, as huggingface_hub does)."""
    import threading
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    timeout = HUB_PROBE_TIMEOUT_S if timeout is None else timeout
    endpoint = constants.ENDPOINT
    if endpoint not in _hub_answers:
        answered: list[bool] = []

        def probe() -> None:
            try:
                urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
                answered.append(True)
            except urllib.error.HTTPError:
                answered.append(True)  # an HTTP error status is still an answer
            except (OSError, ValueError):  # no route, refused, DNS, timeout, bad endpoint URL
                answered.append(False)

        # A thread bounds the wait: the DNS lookup inside urlopen has no timeout of its own.
        thread = threading.Thread(target=probe, daemon=True, name="gpt2tasks-hub-probe")
        thread.start()
        thread.join(timeout + 1.0)
        _hub_answers[endpoint] = bool(answered and answered[0])
        if not _hub_answers[endpoint]:
            log.warning("The Hugging Face Hub (%s) could not be reached (asked with a %.0f s timeout): working "
                        "offline, from the local cache (set HF_HUB_OFFLINE=1 to skip this check).", endpoint, timeout)
            _go_offline()
    return _hub_answers[endpoint]


def _go_offline() -> None:
    """The rest of the process as with HF_HUB_OFFLINE=1: huggingface_hub (and transformers through it)
    and datasets, which keeps its own copy of the switch, stop asking the network."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True


def download_command(name: str) -> str:
    """The download command of the installed huggingface_hub: `hf` (1.0 on), `huggingface-cli` before."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        scripts = {ep.name for ep in distribution("huggingface_hub").entry_points if ep.group == "console_scripts"}
    except PackageNotFoundError:
        scripts = set()
    cli = "huggingface-cli" if "huggingface-cli" in scripts and "hf" not in scripts else "hf"
    return f"{cli} download {name} --local-dir <dir>"
