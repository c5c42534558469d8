"""``agentstream eval``: a case set run through a specialist's loop, scored (README "Evals").

- cases.py: the case file (YAML) and its checks;
- scorers.py: contains / regex / exact;
- judge.py: the LLM judge with a rubric (a scripted rule on the scripted model);
- run.py: running the cases in-process, the table, the summary and the exit code.
"""
