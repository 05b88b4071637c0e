"""Pushing an export to the Hugging Face Hub as a dataset, with its card (L4).

:func:`check_hub_target` validates ``ORG/NAME`` and finds a token before any work or network, so
``clair export --push-to-hub`` fails before it exports; :func:`push_to_hub` uploads the Parquet file
as the ``train`` split and sets the dataset card, keeping the metadata the hub wrote. ``datasets`` and
``huggingface_hub`` are imported only here and only when called, and every failure of theirs becomes
one :class:`HubPushError` line (the local export file is kept).
"""

from __future__ import annotations

import os
import re

from engine.commands.rundata import ExportError

__all__ = ["HubPushError", "check_hub_target", "push_to_hub"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class HubPushError(ExportError):
    """Pushing to the Hugging Face Hub failed (no token, no network, refused); one line, no traceback."""


def check_hub_target(repo_id: str) -> str:
    """Validate ORG/NAME and find a token, before any work or network; returns the token."""
    if not _REPO_ID.match(repo_id or ""):
        raise HubPushError(f"--push-to-hub {repo_id!r} is not a dataset id; use ORG/NAME, e.g. my-org/clair-pairs")
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception as e:  # noqa: BLE001 - boundary: any hub-library failure becomes one line
        raise HubPushError(f"cannot read the Hugging Face token ({_line(e)}); set HF_TOKEN") from None
    if not token:
        raise HubPushError(
            "no Hugging Face token found; run `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN "
            "to a token with write access"
        )
    return token


def _line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:200]}" if msg else type(e).__name__


def push_to_hub(out: str | os.PathLike[str], repo_id: str, card: str, *, private: bool = False,
                token: str | None = None) -> None:
    """Push an export file as the ``train`` split of ``repo_id`` and set its README (dataset card).

    Every failure of ``datasets``/``huggingface_hub`` (no network, offline mode, bad token, refused)
    becomes a one-line :class:`HubPushError`; the local export is kept either way.
    """
    token = token or check_hub_target(repo_id)
    try:
        import datasets
        import yaml
        from huggingface_hub import DatasetCard

        ds = datasets.load_dataset("parquet", data_files=str(out), split="train")
        ds.push_to_hub(repo_id, private=private, token=token,
                       commit_message="Add CLAIR preference pairs (clair-engine export)")
        # push_to_hub wrote the card's dataset_info/configs metadata: keep it, add ours, set the text
        existing = DatasetCard.load(repo_id, repo_type="dataset", token=token).data.to_dict()
        head, body = card.split("\n---\n", 1)
        ours = yaml.safe_load(head.removeprefix("---\n")) or {}
        merged = {**ours, **existing}
        new = DatasetCard("---\n" + yaml.safe_dump(merged, sort_keys=False) + "---\n" + body)
        new.push_to_hub(repo_id, repo_type="dataset", token=token, commit_message="Add the dataset card")
    except Exception as e:  # noqa: BLE001 - boundary: datasets/huggingface_hub raise many unrelated types
        raise HubPushError(
            f"pushing {out} to the Hugging Face Hub as {repo_id} failed ({_line(e)}); the export file is kept; "
            "check the network, HF_HUB_OFFLINE and that your token may write to that namespace"
        ) from None
