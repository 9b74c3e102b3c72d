"""Bridges to other evaluation tools (docs/ecosystem.md): import their per-sample outputs into run
directories, export medharness tasks for them to run, and run lm-eval's tasks on a checkpoint (`run --tasks
lm_eval:NAME`).

Peers are files to medharness: lm-eval is imported (as a library) only inside `lmeval_run`, lmms-eval never,
and VLMEvalKit never in this process (it switches off TLS certificate checks process-wide on import).
"""
