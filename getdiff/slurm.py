"""What the workflow tells a SLURM user before submitting and after a job fails.

Contract
--------
- ``request_errors(requests, limits) -> list[str]``: ``requests`` maps each rule that goes to
  the cluster to its requests (``slurm_account``, ``slurm_partition``, ``mem_mb``, ``threads``,
  ``gpu``, ``cpus_per_gpu``; each a :class:`Request`, whose ``given`` says where it was set);
  ``limits`` maps a partition to ``(largest node memory in MB, most CPUs of a node)`` (from
  ``sinfo``; ``{}`` skips that check). The messages name the rule, the key and what to do: a
  value left as a placeholder (``<account>``, or ``$NAME`` of an unset environment variable),
  or memory / CPUs that no node of the partition has (the job could never start).
- ``partition_limits(sinfo_lines) -> dict``: those limits from ``sinfo -h -N -o "%R %m %c"``.
- ``failure_hints(snakemake_log) -> list[str]``: for each job of a failed run that SLURM killed
  for its memory or its time limit, a line naming the rule, the job and the resource to raise
  (``mem_mb`` or ``runtime``). It reads the plugin's lines in the log (job ids, their SLURM log
  files, failure states) and those SLURM log files; anything unreadable is skipped.

Imported by the Snakefile: no torch, no pandas. README.md, "Running on SLURM".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PLACEHOLDER = re.compile(r"^<.*>$|^\$\{?(\w+)\}?$")
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (\S+/rule_(\w+)/\S*)\)")
FAILED = re.compile(r"SLURM-job '(\d+)' failed, SLURM status is: '(\w+)'")
# What slurmstepd / slurmd write into a job's log when they kill it (Slurm 22.05-24.x).
OUT_OF_MEMORY = ("exceeded memory limit", "exceeded job memory limit", "oom-kill")
OUT_OF_TIME = ("due to time limit",)


@dataclass(frozen=True)
class Request:
    value: object
    given: str  # "default" (--default-resources / the profile's), or "rule" (rule, --set-*)


def _flag(rule: str, key: str, given: str) -> str:
    if key == "threads":
        return f"--set-threads {rule}=N"
    if given == "default":
        return f"--default-resources {key}=... (or --set-resources {rule}:{key}=...)"
    return f"--set-resources {rule}:{key}=..."


def _placeholder_errors(requests: dict[str, dict[str, Request]]) -> list[str]:
    """One message per placeholder: the key, its value, the rules asking it, the fix."""
    rules: dict[tuple[str, str, str], list[str]] = {}
    for rule, asked in requests.items():
        for key, request in asked.items():
            if PLACEHOLDER.match(str(request.value)):
                rules.setdefault((key, str(request.value), request.given), []).append(rule)
    errors = []
    for (key, value, given), names in rules.items():
        variable = PLACEHOLDER.match(value).group(1)
        fix = f"export {variable}=..." if variable else "replace it"
        errors.append(
            f"slurm profile: {key} is the placeholder {value!r} (rules {', '.join(names)}): "
            f"{fix}, or pass {_flag(names[0], key, given)}"
        )
    return errors


def _cpus(asked: dict[str, Request]) -> tuple[str, object]:
    """The CPUs a job asks: cpus_per_gpu x GPUs when both are set, else its threads."""
    gpus = asked.get("gpu", Request(0, "")).value
    per_gpu = asked.get("cpus_per_gpu", Request(None, "")).value
    if isinstance(gpus, int) and gpus > 0 and isinstance(per_gpu, int):
        return "cpus_per_gpu", per_gpu * gpus
    return "threads", asked.get("threads", Request(None, "")).value


def _limit_errors(requests: dict[str, dict[str, Request]], limits: dict) -> list[str]:
    errors = []
    for rule, asked in requests.items():
        partition = asked.get("slurm_partition", Request(None, "")).value
        if partition not in limits:
            continue
        most_mem, most_cpus = limits[partition]
        cpu_key, cpus = _cpus(asked)
        memory = asked.get("mem_mb", Request(None, "")).value
        for key, value, most, unit in (
            ("mem_mb", memory, most_mem, "MB of memory"),
            (cpu_key, cpus, most_cpus, "CPUs"),
        ):
            if isinstance(value, (int, float)) and value > most:
                given = asked[key].given if key in asked else "rule"
                errors.append(
                    f"slurm: rule {rule} asks {value} {unit} ({key}) but the largest node of "
                    f"partition {partition!r} has {most}, so the job could never start: lower "
                    f"{key} ({_flag(rule, key, given)})"
                )
    return errors


def request_errors(requests: dict[str, dict[str, Request]], limits: dict) -> list[str]:
    """Placeholders first (nothing else is meaningful with one left), then node limits."""
    return _placeholder_errors(requests) or _limit_errors(requests, limits)


def partition_limits(sinfo_lines: str) -> dict[str, tuple[int, int]]:
    limits: dict[str, tuple[int, int]] = {}
    for line in sinfo_lines.splitlines():
        fields = line.split()
        if len(fields) != 3 or not (fields[1].isdigit() and fields[2].isdigit()):
            continue
        partition, memory, cpus = fields[0], int(fields[1]), int(fields[2])
        mem, cores = limits.get(partition, (0, 0))
        limits[partition] = (max(mem, memory), max(cores, cpus))
    return limits


def _killed_for(state: str, slurm_log: str) -> str | None:
    text = slurm_log.lower()
    if state == "OUT_OF_MEMORY" or any(mark in text for mark in OUT_OF_MEMORY):
        return "mem_mb"
    if state == "TIMEOUT" or any(mark in text for mark in OUT_OF_TIME):
        return "runtime"
    return None


def failure_hints(snakemake_log: str) -> list[str]:
    jobs = {job: (Path(path), rule) for job, path, rule in SUBMITTED.findall(snakemake_log)}
    hints = []
    for job, state in dict(FAILED.findall(snakemake_log)).items():
        if job not in jobs:
            continue
        path, rule = jobs[job]
        try:
            slurm_log = path.read_text(errors="replace")
        except OSError:
            slurm_log = ""
        resource = _killed_for(state, slurm_log)
        if resource == "mem_mb":
            hints.append(
                f"rule {rule} (SLURM job {job}) was killed for exceeding its memory: raise "
                f"mem_mb (MB), e.g. --set-resources {rule}:mem_mb=N (SLURM log: {path})"
            )
        elif resource == "runtime":
            hints.append(
                f"rule {rule} (SLURM job {job}) was killed at its time limit: raise runtime "
                f"(minutes), e.g. --set-resources {rule}:runtime=N (SLURM log: {path})"
            )
    return hints
