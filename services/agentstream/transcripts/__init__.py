"""Transcripts of finished specialist runs, and their replay (README "Transcripts and replay").

- record.py: the Transcript record (schemas/Transcript.avsc) built from a run's checkpoint steps;
- divergence.py: where two runs of a task part ways;
- recorded.py: a model and tools that answer from a transcript;
- read.py: finding a task's transcript on the topic;
- replay.py: ``agentstream replay``.
"""

# The logical topic of the topology (absent: no transcripts are written). Here, not in
# record.py, so the topology loader names it without importing the specialist's modules.
TRANSCRIPTS = "transcripts"
