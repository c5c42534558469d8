"""Apache Kafka 4 (KRaft) for development, tests and benchmarks, from its Maven artifacts.

``KafkaCluster`` starts 1 or 3 combined broker+controller nodes on loopback ports;
``ensure_jars`` fetches the pinned release once with Maven. Needs ``java`` and ``mvn``.
"""

from agentstream.apache_kafka.cluster import KafkaCluster, KafkaNode
from agentstream.apache_kafka.jars import ensure_jars, java_and_maven_present, kafka_version

__all__ = ["KafkaCluster", "KafkaNode", "ensure_jars", "java_and_maven_present", "kafka_version"]
