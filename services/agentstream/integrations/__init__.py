"""Optional integrations with other stream-processing libraries.

Each module imports its library at import time and says which extra to install when it
is missing, e.g. ``agentstream.integrations.faust`` needs ``pip install 'agentstream[faust]'``.
Nothing here is imported by the core package.
"""
