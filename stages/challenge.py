"""Facts of the RSNA-MICCAI 2021 challenge data that code relies on (written once, here)."""

from __future__ import annotations

SERIES = ("FLAIR", "T1w", "T1wCE", "T2w")  # the four MR series folders of every patient
FAULTY_IDS = ("00109", "00123", "00709")  # patients the organisers flagged as faulty
