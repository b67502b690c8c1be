"""Why the tiny models hold no constant tensors.

transformers initialises every norm scale to identity (Gemma's zero-centred RMSNorm to 0, others to
1) and every bias to 0, exactly what a trained checkpoint never has. A random stand-in that keeps
them constant hides bugs that a real checkpoint would show: a loader that drops a bias, or scales a
Gemma norm by `w` instead of `1 + w`, gives the same numbers as the right one when `w` is 0 (or
when the bias is 0), so no test comparing transformers with vLLM could notice. Each such vector is
moved off its constant by a small draw, deterministically from the model's seed; the model still
behaves like a freshly initialised one.
"""

import torch

PERTURBATION_STD = 0.05


@torch.no_grad()
def perturb_constant_vectors(model: torch.nn.Module, generator: torch.Generator) -> list[str]:
    """Add N(0, PERTURBATION_STD) to every 1-D parameter whose elements are all equal (norm scales
    and biases); returns their names, in the model's parameter order."""
    moved = []
    for name, parameter in model.named_parameters():
        if parameter.dim() == 1 and parameter.numel() > 1 and bool((parameter == parameter[0]).all()):
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            parameter.add_((noise * PERTURBATION_STD).to(parameter.dtype))
            moved.append(name)
    return moved
