"""Rolling out a new version of a specialist: a canary share of sessions, a shadow run
beside the live version, a comparison per version and an automatic rollback.

How a canary's worker gets its tasks: a topic of its own (``<input>.candidate``) read by
a consumer group of its own, not the live topic with a version header and two groups
filtering. Why:

- Offsets and lag. With one topic, each group reads every record and skips the other
  version's: each group's lag counts the other version's tasks too, so the lag of a
  version (and KEDA scaling on it, deploy/keda.py) says nothing about that version's
  backlog, and a 5 % canary pays for reading 100 % of the traffic.
- Rollback. A weight of 0 must move the sessions back: the router sends their next
  tasks to the live topic, and the candidate's topic simply gets nothing more. With a
  header filter, a task already on the shared topic stays bound to the candidate by
  its header.
- Isolation. A broken candidate's retries go through its own retry tiers and its
  checkpoints live in its own changelogs; the live group never touches them.

A shadow, by contrast, reads the live runs' transcripts in a group of its own: it must
run exactly the live version's tasks, after them, so that its side-effecting calls can be
answered from the live run's recorded results; and writing each task twice would double
the router's output for a version that answers nobody (rollout/shadow.py).

Modules: ``config`` (the ``candidate:`` section), ``split`` (sticky per-session split),
``pinning`` (a routed task stays on its version), ``control`` (weights on the compacted
``rollout`` topic), ``dry_run`` and ``shadow``, ``rules`` (statistics and rollback
rules), ``promote`` (the steps up), ``window`` (reading recent records), ``report`` and
``watch`` (the CLI's ``rollout report`` and ``rollout watch``).
"""
