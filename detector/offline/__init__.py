"""The lab wing: training, backtests and the evaluation report (scikit-learn, matplotlib).

``dataset`` (JSONL input), ``training`` (fit, calibrate, save), ``replay`` (the worker's
decisions without Kafka), ``plots``, ``evaluation`` and ``simulate`` (packages). Never
imports :mod:`detector.stream` or :mod:`detector.local`.
"""
