"""Serving: the HTTP app, the job queue and its records, the RunPod worker, security, metrics and
fault handling. Everything here wraps `ltx2.generate()`; nothing below imports it."""
