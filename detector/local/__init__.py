"""The local wing: everything that starts processes on this machine (java, maven, subprocess).

``broker`` (a single-node Kafka from Maven Central jars, ``detector kafka``), ``demo``,
``traffic`` (paced withdrawals to Kafka), ``process`` (worker processes and the one
SIGTERM-then-SIGKILL). May use every other wing.
"""
