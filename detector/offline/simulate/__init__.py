"""Synthetic exchange withdrawal traffic with labelled, injected attacks.

The simulator builds a population of accounts with personal habits, plays their normal
withdrawals over a period, then injects attacks after a warm-up so the detector has history
to compare against. Every event follows the ``withdrawals`` topic contract and carries its
ground truth in ``metadata.label`` (``"normal"`` or a scenario name) and, for attacks,
``metadata.attack_id``.

Normal traffic is deliberately messy so that naive rules have false positives:

* typical amounts are heavy-tailed across accounts (retail ~$50 … whales ~$200k) and noisy
  within an account; ~1% of withdrawals are legit 5-20x the habit (amount thresholds fire);
* ~5% of withdrawals go to a brand-new address (a "new destination" rule fires);
* market-maker accounts withdraw dozens of times a day and users sometimes split a
  withdrawal into a few within minutes (velocity rules fire);
* ~20 shared deposit addresses (merchants, other exchanges) are paid by many accounts at a
  natural pace (a plain fan-in count fires);
* some dormant accounts come back legitimately with their usual amounts and addresses, and
  some accounts sign up mid-period (no history at all).

Attack scenarios, one function each: :func:`account_takeover`, :func:`scripted_burst`,
:func:`dormant_wakeup`, :func:`fan_in`, :func:`structuring`, :func:`night_takeover` (2-5
withdrawals of 3-10x the habit in the account's night, to new addresses, not a drain) and
:func:`scam_address` (many accounts pay one address near their usual amounts over weeks).
:func:`attack_labels` gives the fraud reports of every attack (the labels contract, each
reported some time later), :func:`write_labels` writes them as JSONL.

``SimConfig.test_days`` splits the period into a history and a test period of the same
world, each with its own number of attacks; ``SimConfig.amount_scale`` and
``SimConfig.activity_scale`` shift the whole world's habits (see :class:`SimConfig`).

Dormant accounts need >= 30 days of silence before they wake, longer than the default
period, so their early history is placed *before* ``SimConfig.start``: the first events of
the output can precede ``start`` by up to ~105 days (only dormant accounts' history).

Everything is drawn from :class:`numpy.random.Generator` streams spawned from
``SimConfig.seed``: the output is identical for identical configurations. Addresses look
like real ones (prefix, alphabet, length) but carry no valid checksum.
"""

from detector.offline.quality import NORMAL_LABEL
from detector.offline.simulate.attacks import (
    account_takeover,
    dormant_wakeup,
    fan_in,
    night_takeover,
    scam_address,
    scripted_burst,
    structuring,
)
from detector.offline.simulate.output import encode_event, generate, write_jsonl
from detector.offline.simulate.reports import attack_labels, write_labels
from detector.offline.simulate.world import (
    ASSETS,
    DEFAULT_START,
    SCENARIOS,
    STRUCTURING_LIMIT_USD,
    Asset,
    SimConfig,
)

__all__ = [
    "ASSETS",
    "DEFAULT_START",
    "NORMAL_LABEL",
    "SCENARIOS",
    "STRUCTURING_LIMIT_USD",
    "Asset",
    "SimConfig",
    "account_takeover",
    "attack_labels",
    "dormant_wakeup",
    "encode_event",
    "fan_in",
    "generate",
    "night_takeover",
    "scam_address",
    "scripted_burst",
    "structuring",
    "write_jsonl",
    "write_labels",
]
