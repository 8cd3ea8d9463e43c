"""The worker wing: what runs in production (faust-streaming, aiokafka, kafka-python admin,
prometheus-client).

``app`` (the Faust app and its agents), ``worker`` (``detector worker``), ``topics``
(explicit topic creation), ``metrics`` and ``health`` (what SREs see), ``compat`` (every
third-party internal we rely on). Never imports :mod:`detector.offline` or
:mod:`detector.local`, so a worker image needs neither scikit-learn nor matplotlib.
"""
