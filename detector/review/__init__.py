"""The review wing: ``detector review``, the analysts' queue of held withdrawals.

An aiohttp web page over state read from Kafka (no database of our own):

* ``records``: the ``review-decisions`` contract, and reading held verdicts off ``decisions``;
* ``queue``: the queue's state as plain functions of what was read (held verdicts,
  withdrawals for context, review decisions that resolve them), bounded in memory;
* ``auth``: analysts' scrypt credentials, sessions, CSRF tokens, login throttling;
* ``pages``: the HTML (every dynamic value escaped);
* ``web``: the aiohttp application (routes, origin and token checks, security headers);
* ``service``: the Kafka side (a look-back read of three topics, an idempotent producer) and
  :func:`~detector.review.service.run_review`.

Imports the core and, from the worker wing, only :mod:`detector.stream.metrics` and
:mod:`detector.stream.topics`; never ``offline`` or ``local``.
"""
