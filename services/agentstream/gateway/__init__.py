"""The HTTP gateway (``agentstream gateway``): tasks in over HTTP, their state and progress
out, approvals, cancellation and dead letters, for callers that do not speak Kafka, and the
operator console (``console/``, served at ``/console``).

Stateless and replicable: every replica reads the pipeline's topics into its own RocksDB
view (``view_reader``), so any replica answers for any task. FastAPI and uvicorn come with
the ``gateway`` extra (``pip install 'agentstream[gateway]'``); nothing here is imported by
the workers.
"""
