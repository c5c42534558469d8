"""The router: classifies each task and decides which specialist agent types receive it."""
