"""Shipped starting prompts (``prompts.yaml``): one annotator prompt per task type, named after
the task, plus sentiment, conversation-summary and judge prompts. Read them through
``tuneloop.workflows.prompts.starters()``; every one is checked against its task in the tests.
"""
