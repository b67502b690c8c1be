"""The memory plan as a readable table, and its one-line JSON totals."""

import json

from deploy.memory.plan import MemoryPlan, ProcessBudget

LABEL_WIDTH = 54


def _row(label: str, value: float, detail: str = "", indent: int = 2) -> str:
    text = f"{' ' * indent}{label:<{LABEL_WIDTH - indent}}{value:>8.2f}"
    return f"{text}   {detail}" if detail else text


def _process_lines(process: ProcessBudget) -> list[str]:
    lines = [f"{process.name:<{LABEL_WIDTH}}{'GiB':>8}"]
    lines += [_row(item.label, item.gib, item.detail) for item in process.items]
    lines.append(_row("= needs", process.need_gib))
    lines.append(_row("share", process.share_gib, process.share_detail))
    verdict = "fits" if process.fits else "DOES NOT FIT"
    lines.append(_row(f"headroom ({verdict})", process.headroom_gib))
    if process.breakdown:
        lines.append("  of which / besides (not added again):")
        lines += [_row(item.label, item.gib, item.detail, indent=4) for item in process.breakdown]
    return lines


def format_plan(plan: MemoryPlan) -> str:
    if not plan.processes:
        return plan.no_gpu_reason
    shape = plan.model
    counts = shape.parameters
    lines = [
        f"Memory plan: {shape.name} ({counts.total / 1e9:.2f} B parameters: language model "
        f"{counts.language_model / 1e9:.2f} B, vision tower {counts.vision_tower / 1e9:.2f} B, projector "
        f"{counts.projector / 1e6:.1f} M) on one {plan.gpu} ({plan.gpu_gib:.1f} GiB)",
        plan.summary,
        "",
    ]
    for process in plan.processes:
        lines += _process_lines(process) + [""]
    if plan.outside_shares:
        lines.append("Outside the shares")
        lines += [_row(item.label, item.gib, item.detail) for item in plan.outside_shares]
        lines.append("")
    lines.append(_gpu_line(plan))
    if plan.split is not None:
        settings = f"gpu: {plan.split.kind}, {plan.split.layout}, rollout_share {plan.split.vllm_memory_utilization:g}"
        lines += ["", f"The numbers the run uses ({settings})"]
        lines += [f"  {line}" for line in plan.split.describe()]
    lines += [f"warning: {warning}" for warning in plan.warnings]
    return "\n".join(lines)


def _gpu_line(plan: MemoryPlan) -> str:
    rollout = plan.process("rollout")
    trainers = [p for p in plan.processes if p.name.startswith("trainer")]
    if not (plan.shared_gpu and rollout and trainers):
        return "Each process has a GPU of its own: " + ("all fit" if plan.fits else "something does not fit")
    outside, replicas = sum(item.gib for item in plan.outside_shares), plan.replicas
    trainer_need = max(p.need_gib for p in trainers)
    used = replicas * (rollout.share_gib + outside) + trainer_need
    return (
        f"GPU: vLLM share {replicas * rollout.share_gib:.1f} + CUDA context {replicas * outside:.1f} + trainer peak "
        f"{trainer_need:.1f} = {used:.1f} of {plan.gpu_gib:.1f} GiB ({plan.gpu_gib - used:.1f} GiB spare) -> "
        + ("fits" if plan.fits else "DOES NOT FIT")
    )


def totals_json(plan: MemoryPlan) -> str:
    return json.dumps(plan.totals())
